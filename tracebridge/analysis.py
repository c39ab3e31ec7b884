"""What ``tracebridge summary`` shows: where the time went, per operation and per thread, what failed,
and what was dropped (TraceMe's ProfileAnalyzer and performance dashboard, for a trace file)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ._model import Event, Loss, Stats
from .sinks.lines import format_duration


@dataclass
class Operation:
    """Statistics of the spans (and activities) that share a name."""

    name: str
    count: int = 0
    total_ns: int = 0
    self_ns: int = 0
    mean_ns: int = 0
    p50_ns: int = 0
    p95_ns: int = 0
    max_ns: int = 0
    errors: int = 0
    #: The true number of such spans, estimated from sampled ones (the sum of their adjusted counts).
    estimated: float = 0.0


@dataclass
class ThreadTotal:
    thread_id: int
    thread_name: str
    spans: int = 0
    #: Time covered by the thread's outermost spans.
    busy_ns: int = 0


@dataclass
class Failure:
    name: str
    type: str
    message: str
    count: int = 1
    where: str = ""


@dataclass
class Gaps:
    """Where one thread's events went missing: the trace's loss markers on that thread."""

    thread_id: int
    thread_name: str
    gaps: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    #: When the first and the last gap began, from the start of the trace.
    first_ns: int = 0
    last_ns: int = 0


@dataclass
class Summary:
    operations: list[Operation] = field(default_factory=list)
    threads: list[ThreadTotal] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    unfinished: int = 0
    duration_ns: int = 0
    stats: Stats | None = None
    gaps: list[Gaps] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.as_dict() if self.stats is not None else None
        return d


#: Why logging filters and structlog processors drop records (see tracebridge.logging.count_log_drop).
_LOG_FILTER_REASONS = ("sampled_out", "rate_limited")


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    rank = max(1, round(q * len(sorted_values) + 0.5 - 1e-9))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _self_times(spans: list[Event]) -> dict[int, int]:
    """Self time of each span (its duration minus its children's) for spans of one thread track."""
    out: dict[int, int] = {}
    ordered = sorted(spans, key=lambda e: (e.start_ns, -(e.end_ns or 0)))
    stack: list[Event] = []
    for ev in ordered:
        end = ev.end_ns or ev.start_ns
        while stack and (stack[-1].end_ns or 0) <= ev.start_ns:
            stack.pop()
        out[id(ev)] = end - ev.start_ns
        if stack and end <= (stack[-1].end_ns or 0):
            parent = stack[-1]
            out[id(parent)] -= end - ev.start_ns
        stack.append(ev)
    return out


def summarize(events: list[Event], stats: Stats | None = None, losses: list[Event] | None = None) -> Summary:
    """``losses``: the trace's loss markers (:attr:`TraceFile.losses`)."""
    s = Summary(stats=stats)
    for ev in events:
        s.events[ev.kind] = s.events.get(ev.kind, 0) + 1
    timed = [e for e in events if e.kind in ("span", "activity")]
    markers = losses or []
    if events:
        first = min(e.start_ns for e in events)
        last = max((e.end_ns if e.end_ns is not None else e.start_ns) for e in events)
        s.duration_ns = last - first
    if markers:  # times from the start of the trace: its first event, or a gap before it
        origin = min(m.start_ns for m in markers)
        s.gaps = _gaps(markers, min(origin, first) if events else origin)
    by_thread_track: dict[int, list[Event]] = {}
    for e in timed:
        if e.end_ns is None:
            s.unfinished += 1
        elif e.kind == "span" and e.track is None and not e.overlapping:
            by_thread_track.setdefault(e.thread_id, []).append(e)
    self_ns: dict[int, int] = {}
    for spans in by_thread_track.values():
        self_ns.update(_self_times(spans))
    ops: dict[str, tuple[Operation, list[int]]] = {}
    for e in timed:
        if e.end_ns is None:
            continue
        op, durations = ops.setdefault(e.name, (Operation(e.name), []))
        d = e.end_ns - e.start_ns
        op.count += 1
        op.estimated += e.adjusted_count
        op.total_ns += d
        op.self_ns += self_ns.get(id(e), d)
        durations.append(d)
        if e.error is not None:
            op.errors += 1
    for op, durations in ops.values():
        durations.sort()
        op.mean_ns = op.total_ns // op.count
        op.p50_ns = _percentile(durations, 0.50)
        op.p95_ns = _percentile(durations, 0.95)
        op.max_ns = durations[-1]
    s.operations = sorted((op for op, _ in ops.values()), key=lambda o: (-o.total_ns, o.name))
    threads: dict[int, ThreadTotal] = {}
    for tid, spans in by_thread_track.items():
        t = threads.setdefault(tid, ThreadTotal(tid, spans[0].thread_name))
        t.spans = len(spans)
        covered_until = -1
        for ev in sorted(spans, key=lambda e: e.start_ns):
            end = ev.end_ns or ev.start_ns
            if ev.start_ns >= covered_until:
                t.busy_ns += end - ev.start_ns
                covered_until = end
            elif end > covered_until:
                t.busy_ns += end - covered_until
                covered_until = end
    s.threads = sorted(threads.values(), key=lambda t: -t.busy_ns)
    failures: dict[tuple[str, str, str], Failure] = {}
    for e in events:
        if e.error is None:
            continue
        key = (e.name, e.error.type, e.error.message)
        f = failures.get(key)
        if f is None:
            where = str(e.error.frames[-1]) if e.error.frames else ""
            failures[key] = Failure(e.name, e.error.type, e.error.message, 1, where)
        else:
            f.count += 1
    s.failures = sorted(failures.values(), key=lambda f: -f.count)
    return s


def _gaps(markers: list[Event], origin: int) -> list[Gaps]:
    by_thread: dict[int, Gaps] = {}
    for marker in markers:
        loss = Loss.from_marker(marker)
        if loss is None:
            continue
        g = by_thread.get(marker.thread_id)
        at = loss.first_ns - origin
        if g is None:
            g = by_thread[marker.thread_id] = Gaps(
                marker.thread_id, marker.thread_name, first_ns=at, last_ns=at
            )
        g.gaps += 1
        g.first_ns = min(g.first_ns, at)
        g.last_ns = max(g.last_ns, at)
        for reason, n in loss.dropped.items():
            g.dropped[reason] = g.dropped.get(reason, 0) + n
    return sorted(by_thread.values(), key=lambda g: -sum(g.dropped.values()))


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render(s: Summary, top: int = 20) -> str:
    d = format_duration
    lines: list[str] = []
    kinds = ", ".join(f"{k}: {n}" for k, n in sorted(s.events.items()))
    lines.append(f"{sum(s.events.values())} events ({kinds or 'none'}) over {d(s.duration_ns)}")
    if s.unfinished:
        lines.append(f"{s.unfinished} spans or activities did not end")
    if s.operations:
        sampled = any(abs(op.estimated - op.count) > 1e-9 for op in s.operations)
        lines += ["", f"Top time consumers (of {len(s.operations)} operations):"]
        rows = [["name", "count", "total", "self", "mean", "p50", "p95", "max", "errors"]]
        if sampled:
            rows[0].insert(2, "est. true count")
        for op in s.operations[:top]:
            row = [
                op.name,
                str(op.count),
                d(op.total_ns),
                d(op.self_ns),
                d(op.mean_ns),
                d(op.p50_ns),
                d(op.p95_ns),
                d(op.max_ns),
                str(op.errors) if op.errors else "",
            ]
            if sampled:
                row.insert(2, f"{op.estimated:,.0f}")
            rows.append(row)
        lines += ["  " + r for r in _table(rows, right=set(range(1, len(rows[0]))))]
    if s.threads:
        lines += ["", "Threads:"]
        rows = [["thread", "tid", "spans", "busy"]]
        rows += [[t.thread_name, str(t.thread_id), str(t.spans), d(t.busy_ns)] for t in s.threads]
        lines += ["  " + r for r in _table(rows, right={1, 2, 3})]
    if s.failures:
        lines += ["", "Failures:"]
        for f in s.failures[:top]:
            at = f" at {f.where}" if f.where else ""
            lines.append(f"  {f.count}x {f.name}: {f.type}: {f.message}{at}")
    if s.stats is not None:
        st = s.stats
        lines += ["", f"Recorded: {st.total_recorded} events; dropped: {st.total_dropped}"]
        for reason, by_kind in sorted(st.dropped.items()):
            detail = ", ".join(f"{n} {k}" for k, n in sorted(by_kind.items()))
            lines.append(f"  dropped ({reason}): {detail}")
        if any("log" in st.dropped.get(r, {}) for r in _LOG_FILTER_REASONS):
            lines.append(
                "  (log records dropped by logging filters or structlog processors count too, for the"
                " handlers or loggers those are on: a record a console's filter dropped may be in the trace)"
            )
        if s.gaps:
            lines += ["", "Where events went missing (each place is marked in the trace, on its thread):"]
            rows = [["thread", "tid", "places", "dropped", "why", "first", "last"]]
            for g in s.gaps:
                why = ", ".join(
                    f"{r} {n:,}" if len(g.dropped) > 1 else r for r, n in sorted(g.dropped.items())
                )
                total = f"{sum(g.dropped.values()):,}"
                when = [f"+{d(g.first_ns)}", f"+{d(g.last_ns)}"]
                rows.append([g.thread_name, str(g.thread_id), str(g.gaps), total, why, *when])
            lines += ["  " + r for r in _table(rows, right={1, 2, 3, 5, 6})]
        if st.open_activities:
            lines.append(f"  {st.open_activities} activities were still open when the session stopped")
        if st.scrubbed:
            lines.append(f"  {st.scrubbed} secret values scrubbed")
        if st.sanitized:
            lines.append(f"  {st.sanitized} values sanitized (truncated, repaired or unrepresentable)")
        if st.demoted:
            lines += ["", "Demoted (always under their min_duration; near-zero cost until the next session):"]
            for name, calls in sorted(st.demoted.items()):
                lines.append(f"  {name} (after {calls} calls)")
        if st.sampling:
            lines += ["", "Sampling:"]
            for label, entry in st.sampling.items():
                kept = sum(entry.get("kept", {}).values())
                dropped = sum(entry.get("dropped", {}).values())
                extra = "".join(f", {key} {entry[key]}" for key in ("evicted", "errors") if entry.get(key))
                lines.append(f"  {label}: kept {kept}, dropped {dropped}{extra}")
    return "\n".join(lines)
