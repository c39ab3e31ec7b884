"""What ``tracebridge summary`` shows: where the time went, per operation and per thread, what failed,
and what was dropped (TraceMe's ProfileAnalyzer and performance dashboard, for a trace file)."""

from __future__ import annotations

import math
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

#: Durations of one operation kept exactly; past this many (or past EXACT_BUDGET for all operations
#: together), percentiles come from a histogram whose buckets are 2% wide (each value is within 1% of
#: its bucket's middle).
EXACT_DURATIONS = 1024
EXACT_BUDGET = 100_000
#: Distinct names (and failures) summarized apart; more are added up under OTHER.
MAX_OPERATIONS = 10_000
MAX_FAILURES = 1_000
OTHER = "(other names)"
_GAMMA = 1.02
_LOG_GAMMA = math.log(_GAMMA)


def _rank(n: int, q: float) -> int:
    return min(max(1, round(q * n + 0.5 - 1e-9)), n)


class _Durations:
    """The durations of one operation, for its percentiles: exact up to EXACT_DURATIONS, then a
    histogram (memory bounded whatever the count)."""

    __slots__ = ("buckets", "exact", "n")

    def __init__(self) -> None:
        self.exact: list[int] | None = []
        self.buckets: dict[int, int] = {}
        self.n = 0

    def add(self, d: int) -> None:
        self.n += 1
        if self.exact is not None:
            self.exact.append(d)
        else:
            self._count(d)

    def to_histogram(self) -> int:
        """Let go of the exact durations (counted in the histogram); how many there were."""
        exact, self.exact = self.exact or [], None
        for v in exact:
            self._count(v)
        return len(exact)

    def _count(self, d: int) -> None:
        b = -1 if d <= 0 else int(math.log(d) / _LOG_GAMMA)
        self.buckets[b] = self.buckets.get(b, 0) + 1

    def percentile(self, q: float, high: int) -> int:
        if not self.n:
            return 0
        rank = _rank(self.n, q)
        if self.exact is not None:
            return sorted(self.exact)[rank - 1]
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen >= rank:
                middle = 0 if b < 0 else round(_GAMMA ** (b + 0.5))
                return min(middle, high)
        return high


class SummaryBuilder:
    """A :class:`Summary` built one event at a time (an :class:`~tracebridge.reading.EventSink`), so
    that a trace of any size is summarized in bounded memory: ``read_trace(path, sink=builder)``, then
    :meth:`finish`. :func:`summarize` does the same for a list of events.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self.s = Summary()
        self.first: int | None = None
        self.last: int | None = None
        self.ops: dict[str, tuple[Operation, _Durations]] = {}
        self.threads: dict[int, ThreadTotal] = {}
        self.thread_seen: dict[int, int] = {}  # tid -> start of the earliest span that named it
        self.failures: dict[tuple[str, str, str], Failure] = {}
        self.failure_seen: dict[tuple[str, str, str], int] = {}  # -> start of its earliest occurrence
        self.exact_left = EXACT_BUDGET  # durations that may still be kept exactly, all operations together

    def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None:
        s = self.s
        s.events[ev.kind] = s.events.get(ev.kind, 0) + 1
        end = ev.end_ns if ev.end_ns is not None else ev.start_ns
        if self.first is None or ev.start_ns < self.first:
            self.first = ev.start_ns
        if self.last is None or end > self.last:
            self.last = end
        if ev.error is not None:
            self._failure(ev)
        if ev.kind not in ("span", "activity"):
            return
        on_thread = ev.kind == "span" and ev.track is None and not ev.overlapping
        if ev.end_ns is None:
            s.unfinished += 1
            if on_thread and covered_ns > 0:  # (its children that ended: the thread was busy then)
                self._thread(ev).busy_ns += covered_ns
            return
        d = ev.end_ns - ev.start_ns
        found = self.ops.get(ev.name)
        if found is None:
            name = ev.name if len(self.ops) < MAX_OPERATIONS else OTHER
            found = self.ops.get(name)
            if found is None:
                found = self.ops[name] = (Operation(name), _Durations())
        op, durations = found
        op.count += 1
        op.estimated += ev.adjusted_count
        op.total_ns += d
        op.self_ns += self_ns if on_thread and self_ns is not None else d
        op.max_ns = max(op.max_ns, d)
        if durations.exact is not None:
            if len(durations.exact) >= EXACT_DURATIONS or self.exact_left <= 0:
                self.exact_left += durations.to_histogram()
            else:
                self.exact_left -= 1
        durations.add(d)
        if ev.error is not None:
            op.errors += 1
        if on_thread:
            t = self._thread(ev)
            t.spans += 1
            if depth == 0:  # an outermost span: the thread was busy for all of it
                t.busy_ns += d

    def _thread(self, ev: Event) -> ThreadTotal:
        t = self.threads.get(ev.thread_id)
        if t is None:
            t = self.threads[ev.thread_id] = ThreadTotal(ev.thread_id, ev.thread_name)
            self.thread_seen[ev.thread_id] = ev.start_ns
        elif ev.start_ns < self.thread_seen[ev.thread_id]:  # (the same name, whatever the order)
            t.thread_name = ev.thread_name
            self.thread_seen[ev.thread_id] = ev.start_ns
        return t

    def _failure(self, ev: Event) -> None:
        assert ev.error is not None
        key = (ev.name, ev.error.type, ev.error.message)
        f = self.failures.get(key)
        if f is None:
            if len(self.failures) >= MAX_FAILURES:
                key = (OTHER, "", "")
                f = self.failures.get(key)
            if f is None:
                where = str(ev.error.frames[-1]) if ev.error.frames else ""
                self.failures[key] = Failure(key[0], key[1], key[2], 1, where)
                self.failure_seen[key] = ev.start_ns
                return
        f.count += 1
        if ev.start_ns < self.failure_seen[key] and ev.error.frames and key[0] != OTHER:
            f.where = str(ev.error.frames[-1])  # (where it failed first, whatever the order)
            self.failure_seen[key] = ev.start_ns

    def finish(self, stats: Stats | None = None, losses: list[Event] | None = None) -> Summary:
        """The summary of the events given, with the trace's ``stats`` and loss markers
        (:attr:`TraceFile.losses`)."""
        s = self.s
        s.stats = stats
        if self.first is not None and self.last is not None:
            s.duration_ns = self.last - self.first
        if losses:  # times from the start of the trace: its first event, or a gap before it
            origin = min(m.start_ns for m in losses)
            s.gaps = _gaps(losses, origin if self.first is None else min(origin, self.first))
        for op, durations in self.ops.values():
            op.mean_ns = op.total_ns // op.count
            op.p50_ns = durations.percentile(0.50, op.max_ns)
            op.p95_ns = durations.percentile(0.95, op.max_ns)
        s.operations = sorted((op for op, _ in self.ops.values()), key=lambda o: (-o.total_ns, o.name))
        s.threads = sorted(self.threads.values(), key=lambda t: (-t.busy_ns, t.thread_id))
        s.failures = sorted(self.failures.values(), key=lambda f: (-f.count, f.name, f.type, f.message))
        return s


def summarize(events: list[Event], stats: Stats | None = None, losses: list[Event] | None = None) -> Summary:
    """The summary of a list of events (of a session, or a trace read whole); ``losses``: the trace's
    loss markers (:attr:`TraceFile.losses`)."""
    from .reading import feed

    builder = SummaryBuilder()
    feed(events, builder)
    return builder.finish(stats, losses)


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
