"""Chrome JSON trace format: writer and reader.

The writer streams ``{"traceEvents": [...]`` as events arrive and closes the object at the end with
``displayTimeUnit``. The session's stats are the arguments of an ``X`` event that spans it, on a lane of
its own ("tracebridge"), named after what it recorded and lost. Spans are ``X`` events,
instants ``i``, counter samples ``C``, activities ``b``/``e`` (async, one id each), log messages ``i``
events in category ``log``, flows ``s``/``t``/``f`` (written at the end, in time order), and ``M`` events
name the process and threads. Spans of one thread that overlap without nesting, and spans on named tracks,
go on extra thread ids (named by ``M`` events) so that no two ``X`` events on one tid cross.
Timestamps are microseconds with three decimals: nanosecond precision survives the round trip.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from .._model import (
    ERROR_CAUSE_KEY,
    ERROR_MESSAGE_KEY,
    ERROR_STACKTRACE_KEY,
    ERROR_TYPE_KEY,
    MAX_STACKTRACE_TEXT,
    STATS_CATEGORY,
    STATS_TRACK,
    ErrorInfo,
    Event,
    Frame,
    Loss,
    Problem,
    Stats,
    ThreadInfo,
    TraceFile,
    TraceReadError,
    trace_clock_ns,
)
from ._files import AppendOnlyFile, Lanes, renewed

#: The top-level key of an event that holds tracebridge's own fields (level, frames, flows, ...).
OWN_KEY = "tb"
TRACE_KEY = "tb.trace_id"
#: Extra thread ids for lanes start here: far above real thread ids (Linux's are below 2^22), and below
#: 2^31, since trace_processor's JSON importer puts events of larger thread ids on the process's main
#: thread (every lane would collapse onto it). A lane never takes a thread id the file uses for a thread.
LANE_TID_BASE = (1 << 31) - (1 << 24)
#: Written in the ``args`` of a lane's ``thread_name`` event: what the lane holds.
LANE_KIND_KEY = "tb.lane"
LANE_THREAD_KEY = "tb.thread"


def _us(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    return f"{sign}{ns // 1000}.{ns % 1000:03d}"


def _json_value(value: Any) -> Any:
    """Metadata values as JSON can carry them: non-finite floats become strings."""
    if type(value) is float and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if type(value) is dict:
        return {k: _json_value(v) for k, v in value.items()}
    if type(value) is list:
        return [_json_value(v) for v in value]
    return value


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _Num:
    """A number already formatted as JSON (timestamps keep exactly three decimals)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _ts(ns: int) -> _Num:
    return _Num(_us(ns))


def _encode(fields: dict[str, Any]) -> str:
    return (
        "{"
        + ",".join(f"{_dumps(k)}:{v.text if isinstance(v, _Num) else _dumps(v)}" for k, v in fields.items())
        + "}"
    )


class ChromeJsonWriter:
    """Streams events to a Chrome JSON trace file."""

    drop_reason = "sink_error"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pid: int | None = None,
        process_name: str | None = None,
        start_ts: int | None = None,
        end_ts: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        #: When the session began and ended (trace clock), for its stats event: by default, when the
        #: writer is made and closed (a converted trace passes the original session's).
        self.start_ts = trace_clock_ns() if start_ts is None else start_ts
        self.end_ts = end_ts
        self._out = AppendOnlyFile(path)
        self.pid = os.getpid() if pid is None else pid
        self._pending: list[str] = []
        self._first = True
        self._lanes: dict[Any, tuple[Lanes, list[int]]] = {}
        self._next_lane_tid = LANE_TID_BASE
        self._flows: list[tuple[int, int, int, str]] = []  # (flow id, ts, tid, "step" or "end")
        self._named: set[int] = set()  # thread ids whose thread_name event is in the file
        self._named_now: list[int] = []
        self.process_name = process_name or (
            os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
        )
        self._head()
        self._commit()

    def _head(self) -> None:
        self._pending.append('{"traceEvents":[\n')
        self._emit(
            {
                "ph": "M",
                "pid": self.pid,
                "tid": 0,
                "name": "process_name",
                "args": {"name": self.process_name},
            }
        )

    def _renew_file(self) -> None:
        """The file was deleted or replaced while recording: the trace starts afresh in a new file."""
        if not self._out.renew():
            return
        self._pending = []  # (a rename waiting for the next batch: the new head names the process so)
        self._first = True
        self._named.clear()
        self._head()
        renewed(self.path, self._out.renewed)

    def rename_process(self, name: str) -> None:
        """Name the process again (readers take the last ``process_name``); written with the next batch."""
        self.process_name = name
        self._emit({"ph": "M", "pid": self.pid, "tid": 0, "name": "process_name", "args": {"name": name}})

    def _emit(self, obj: dict[str, Any]) -> None:
        text = _encode(obj)
        if self._first:
            self._first = False
            self._pending.append(text)
        else:
            self._pending.append(",\n" + text)

    def _name_thread(self, tid: int, args: dict[str, Any]) -> None:
        if tid not in self._named:
            self._named.add(tid)
            self._named_now.append(tid)
            self._emit({"ph": "M", "pid": self.pid, "tid": tid, "name": "thread_name", "args": args})

    def _lane_tid(
        self, key: Any, name: str, kind: str, thread: ThreadInfo, start: int, end: int | None
    ) -> int:
        entry = self._lanes.get(key)
        if entry is None:
            entry = (Lanes(), [])
            self._lanes[key] = entry
        lanes, tids = entry
        lane = lanes.place(start, float("inf") if end is None else end)
        while len(tids) <= lane:
            while self._next_lane_tid in self._named:  # (a thread of that id: not for a lane)
                self._next_lane_tid += 1
            tids.append(self._next_lane_tid)
            self._next_lane_tid += 1
        tid = tids[lane]
        self._name_thread(tid, {"name": name, LANE_KIND_KEY: kind, LANE_THREAD_KEY: thread.tid})
        return tid

    def write(self, thread: ThreadInfo, events: list[Event], loss: Loss | None = None) -> int:
        self._renew_file()
        flows_before = len(self._flows)
        first_before = self._first
        try:
            self._name_thread(thread.tid, {"name": thread.name})
            if loss is not None:  # an instant marks where the thread's events went missing
                self._event(thread, loss.marker(thread))
            for ev in events:
                self._event(thread, ev)
            self._commit()
        except BaseException:
            del self._flows[flows_before:]
            self._first = first_before
            raise
        return len(events)

    def _commit(self) -> None:
        """Append what is pending in one write (all of it, or nothing: see AppendOnlyFile)."""
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending.clear()
        try:
            self._out.append(data)
        except BaseException:
            self._named.difference_update(self._named_now)  # their thread_name events are not in the file
            raise
        finally:
            self._named_now.clear()

    def _args(self, ev: Event) -> dict[str, Any]:
        """What viewers show: the metadata, and for a failure its type, message and back-trace (text)."""
        args: dict[str, Any] = {k: _json_value(v) for k, v in ev.metadata.items()}
        if ev.error is not None:
            args[ERROR_TYPE_KEY] = ev.error.type
            args[ERROR_MESSAGE_KEY] = ev.error.message
            if ev.error.cause is not None:
                args[ERROR_CAUSE_KEY] = ev.error.causes()
            if ev.error.frames:
                args[ERROR_STACKTRACE_KEY] = ev.error.stacktrace(MAX_STACKTRACE_TEXT)
        return args

    def _own(self, ev: Event) -> dict[str, Any]:
        """tracebridge's own fields, kept apart from ``args`` (viewers ignore unknown keys), so that the
        metadata can use any key and ``read`` gets back exactly what was written."""
        own: dict[str, Any] = {}
        if ev.level != 1:
            own["level"] = ev.level
        if ev.adjusted_count != 1.0:
            own["adjusted_count"] = ev.adjusted_count
        if ev.error is not None and ev.error.frames:
            own["frames"] = [[f.function, f.file, f.line] for f in ev.error.frames]
        if ev.flows:
            own["flows"] = [f"0x{fid:x}" for fid in ev.flows]
        if ev.terminating_flows:
            own["terminating_flows"] = [f"0x{fid:x}" for fid in ev.terminating_flows]
        if ev.track is not None and ev.kind == "activity":
            own["track"] = ev.track
        if ev.kind == "log":
            own["prio"] = ev.value
            if ev.source is not None:
                own["source"] = [ev.source.file, ev.source.line, ev.source.function]
        if ev.kind == "counter" and ev.unit is not None:
            own["unit"] = ev.unit
        return own

    def _event(self, thread: ThreadInfo, ev: Event) -> None:
        kind = ev.kind
        tid = thread.tid
        base: dict[str, Any] = {"name": ev.name, "pid": self.pid}
        if ev.categories:
            base["cat"] = ",".join(ev.categories)
        own = self._own(ev)
        if own:
            base[OWN_KEY] = own
        if kind == "counter":
            # (trace_processor names a counter track "<name> <arg key>": one series, "value")
            base.update(ph="C", ts=_ts(ev.start_ns), tid=tid, args={"value": _json_value(ev.value)})
            self._emit(base)
            return
        args = self._args(ev)
        if kind == "activity":
            # A process-scoped id ("id2": {"local": ...}): its track goes under the process, not under
            # "Global Legacy Events" as a plain "id" would put it.
            aid = {"local": f"0x{ev.span_id or id(ev):x}"}
            cat = base.setdefault("cat", "activity")
            self._emit({**base, "ph": "b", "id2": aid, "ts": _ts(ev.start_ns), "tid": tid, "args": args})
            if ev.end_ns is not None:
                end = {"name": ev.name, "cat": cat, "pid": self.pid, "ph": "e", "id2": aid}
                self._emit({**end, "ts": _ts(ev.end_ns), "tid": tid})
            return
        if ev.track is not None:
            end_ns = ev.end_ns if kind == "span" else ev.start_ns
            tid = self._lane_tid(("named", ev.track), ev.track, "named", thread, ev.start_ns, end_ns)
        elif kind == "span" and ev.overlapping:
            name = f"{thread.name} (overlapping)"
            tid = self._lane_tid(("overlap", thread.tid), name, "overlap", thread, ev.start_ns, ev.end_ns)
        if kind == "span":
            dur = (ev.end_ns or ev.start_ns) - ev.start_ns
            self._flows.extend((fid, ev.start_ns, tid, "step") for fid in ev.flows)
            self._flows.extend((fid, ev.start_ns, tid, "end") for fid in ev.terminating_flows)
            self._emit({**base, "ph": "X", "ts": _ts(ev.start_ns), "dur": _ts(dur), "tid": tid, "args": args})
            return
        if kind == "log":
            base["cat"] = "log"
        self._emit({**base, "ph": "i", "s": "t", "ts": _ts(ev.start_ns), "tid": tid, "args": args})

    def _write_flows(self) -> None:
        """Flow events for viewers, in time order: ``s`` where a flow first appears, ``t`` where it
        continues, ``f`` (bound to the enclosing slice) where it ends. (Our reader takes flows from the
        spans' own arguments, which name them exactly.)"""
        started: set[int] = set()
        for fid, ts, tid, kind in sorted(self._flows, key=lambda f: f[1]):  # stable: ties keep order
            ph = "f" if kind == "end" else ("t" if fid in started else "s")
            started.add(fid)
            obj: dict[str, Any] = {
                "ph": ph,
                "id": f"0x{fid:x}",
                "name": "flow",
                "cat": "flow",
                "pid": self.pid,
                "tid": tid,
                "ts": _ts(ts),
            }
            if ph == "f":
                obj["bp"] = "e"
            self._emit(obj)
        self._flows.clear()

    def flush(self) -> None:
        """Nothing to do: every ``write`` reaches the file before it returns."""

    def close(self, stats: Stats | None = None, open_activities: Iterable[Event] = ()) -> None:
        if self._out.closed:
            return
        try:
            self._renew_file()
            for ev in open_activities:
                self._name_thread(ev.thread_id, {"name": ev.thread_name})
                self._event(ThreadInfo(self.pid, ev.thread_id, ev.thread_name), ev)
            self._write_flows()
            if stats is not None:
                self._stats_event(stats)
            self._pending.append(_TAIL)
            self._commit()
        finally:
            self._out.close()

    def _stats_event(self, stats: Stats) -> None:
        """The session as an ``X`` event on a lane of its own, named after what it recorded and lost,
        with the stats as arguments (as the Perfetto writer's stats slice)."""
        end = max(trace_clock_ns() if self.end_ts is None else self.end_ts, self.start_ts)
        tid = self._lane_tid(
            ("stats",), STATS_TRACK, "stats", ThreadInfo(self.pid, 0, ""), self.start_ts, end
        )
        self._emit(
            {
                "ph": "X",
                "name": stats.headline(),
                "cat": STATS_CATEGORY,
                "pid": self.pid,
                "tid": tid,
                "ts": _ts(self.start_ts),
                "dur": _ts(end - self.start_ts),
                "args": stats.as_dict(),
            }
        )


# ------------------------------------------------------------------------------------------- reading


def _num(v: Any) -> Any:
    if isinstance(v, Decimal):
        return float(v)
    if type(v) is dict:
        return {k: _num(x) for k, x in v.items()}
    if type(v) is list:
        return [_num(x) for x in v]
    return v


def _ns(v: Any) -> int:
    return int((Decimal(v) * 1000).to_integral_value())


def read_chrome_json(path: str | os.PathLike[str]) -> TraceFile:
    try:
        return _read_chrome_json(path)
    except RecursionError:  # (legal JSON nested deeper than its events' values can be converted)
        raise TraceReadError(
            f"{path}: not a Chrome trace tracebridge reads: values nested too deeply"
        ) from None


def _read_chrome_json(path: str | os.PathLike[str]) -> TraceFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TraceReadError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except MemoryError:
        raise TraceReadError(f"{p}: too large to read as JSON in this process's memory") from None
    cut: int | None = None
    try:
        doc = json.loads(text, parse_float=Decimal)
    except RecursionError:
        raise TraceReadError(f"{p}: not a Chrome trace: JSON nested too deeply to read") from None
    except MemoryError:
        raise TraceReadError(f"{p}: too large to read as JSON in this process's memory") from None
    except json.JSONDecodeError as exc:
        try:
            salvaged = _cut_off_events(text)
        except RecursionError:
            raise TraceReadError(f"{p}: not a Chrome trace: JSON nested too deeply to read") from None
        if salvaged is None:
            raise TraceReadError(f"{p}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
        doc, cut = salvaged
        if not doc:
            raise TraceReadError(f"{p}: truncated: no complete event") from None
    if isinstance(doc, list):
        raw_events = doc
    elif isinstance(doc, dict) and isinstance(doc.get("traceEvents"), list):
        raw_events = doc["traceEvents"]
    else:
        raise TraceReadError(f"{p}: JSON but not a Chrome trace (no traceEvents list)")
    out = TraceFile("json", size=p.stat().st_size)
    if cut is not None:
        out.truncated_bytes = cut
        out.notes.append(
            "the trace was cut off (the process died while writing it): "
            + (f"its last {cut} bytes are an incomplete event; ignored" if cut else "it ends after an event")
        )
    # Threads and lanes by (pid, tid): child processes appended to a trace number their lanes alike.
    thread_names: dict[tuple[int, int], str] = {}
    for e in raw_events:
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "process_name":
            pid = int(e.get("pid", 0))
            name = str((e.get("args") or {}).get("name", ""))  # the last one wins
            if not out.processes:
                out.pid = pid  # (the trace's own process is named first; its children's after)
            out.processes[pid] = name
    out.process_name = out.processes.get(out.pid, "")
    lanes: dict[tuple[int, int], tuple[str, int, str]] = {}  # lane -> (kind, real tid, track name)
    for e in raw_events:
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_name":
            args = e.get("args") or {}
            key = (int(e.get("pid", 0)), int(e.get("tid", 0)))
            if LANE_KIND_KEY in args:
                lanes[key] = (
                    str(args[LANE_KIND_KEY]),
                    int(args.get(LANE_THREAD_KEY, 0)),
                    str(args.get("name", "")),
                )
            else:
                thread_names[key] = str(args.get("name", ""))
    activities: dict[tuple[str, str], Event] = {}
    for i, e in enumerate(raw_events):
        if not isinstance(e, dict):
            out.problems.append(Problem("json_parser_failure", f"event {i} is not an object"))
            continue
        ph = e.get("ph")
        if ph == "M":
            continue
        pid = e.get("pid", 0)
        lane = lanes.get((pid, e["tid"])) if type(e.get("tid")) is int and type(pid) is int else None
        if lane is not None and lane[0] == "stats" and ph == "X":  # the session, with its stats
            try:
                start, dur = _ns(e["ts"]), _ns(e.get("dur", 0))
                if dur < 0:
                    raise ValueError(f"negative duration {dur} ns")
                stats = Stats.from_dict(_num(dict(e.get("args") or {})))
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                out.problems.append(
                    Problem(
                        "json_parser_failure", f"event {i} (the session's stats): {type(exc).__name__}: {exc}"
                    )
                )
                continue
            out.stats = stats if out.stats is None else out.stats.merge(stats)
            first, last = out.session_ns or (start, start + dur)
            out.session_ns = (min(first, start), max(last, start + dur))
            continue
        try:
            ev = _json_event(e, ph, thread_names, lanes, activities)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            out.problems.append(
                Problem("json_parser_failure", f"event {i} ({ph}): {type(exc).__name__}: {exc}")
            )
            continue
        if ev is None:
            continue
        if Loss.from_marker(ev) is not None:
            out.losses.append(ev)
            continue
        out.events.append(ev)
    out.events.extend(activities.values())
    out.events.sort(key=lambda ev: ev.start_ns)
    out.losses.sort(key=lambda ev: ev.start_ns)
    return out


_TAIL = '\n],"displayTimeUnit":"ns"}\n'


def append_chrome_traces(target: str | os.PathLike[str], paths: Iterable[Path]) -> None:
    """Append the events of the Chrome JSON traces ``paths`` (child processes; a file cut off adds its
    complete events) to ``target``, a finished trace this writer made, before its closing bracket."""
    bodies = []
    for src in paths:
        text = src.read_text(encoding="utf-8", errors="replace")
        found = _event_array(text)
        if found is not None and found[1] > found[0]:
            bodies.append(text[found[0] : found[1]])
    if not bodies:
        return
    tail = _TAIL.encode()
    with open(target, "r+b") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - len(tail)))
        if f.read() != tail:
            raise ValueError(f"{target} does not end as a finished Chrome JSON trace")
        f.seek(size - len(tail))
        f.truncate()
        f.write(("".join(",\n" + body for body in bodies) + _TAIL).encode("utf-8", "replace"))


def _event_array(text: str) -> tuple[int, int] | None:
    """Where the complete events of a Chrome trace's event array are: (start, end) offsets, from its
    first event to the end of its last complete one."""
    start = _ARRAY_START.match(text)
    if start is None:
        return None
    decoder = json.JSONDecoder()
    pos = first = _SEPARATOR.match(text, start.end()).end()  # type: ignore[union-attr]
    end = first
    while pos < len(text) and text[pos] != "]":
        try:
            _, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        pos = _SEPARATOR.match(text, end).end()  # type: ignore[union-attr]
    return first, end


_ARRAY_START = re.compile(r'\s*(?:\{\s*"traceEvents"\s*:\s*)?\[')
_SEPARATOR = re.compile(r"\s*,?\s*")


def _cut_off_events(text: str) -> tuple[list[Any], int] | None:
    """A trace cut off while it was written (the process died): the complete events of its array, as
    trace_processor imports such a file, and how many bytes at the end were left out. ``None`` when
    the text does not start as a Chrome trace, or when its event array is complete (then the JSON is
    broken somewhere else, not cut off)."""
    start = _ARRAY_START.match(text)
    if start is None:
        return None
    decoder = json.JSONDecoder(parse_float=Decimal)
    events: list[Any] = []
    pos = start.end()
    while True:
        pos = _SEPARATOR.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text):
            return events, 0
        if text[pos] == "]":
            return None
        try:
            event, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return events, len(text[pos:].encode("utf-8", "replace"))
        events.append(event)


def _json_event(
    e: dict[str, Any],
    ph: Any,
    thread_names: dict[tuple[int, int], str],
    lanes: dict[tuple[int, int], tuple[str, int, str]],
    activities: dict[tuple[str, str], Event],
) -> Event | None:
    ev = _json_event_of(e, ph, thread_names, lanes, activities)
    if ev is not None:
        ev.pid = int(e.get("pid", 0))
    return ev


def _json_event_of(
    e: dict[str, Any],
    ph: Any,
    thread_names: dict[tuple[int, int], str],
    lanes: dict[tuple[int, int], tuple[str, int, str]],
    activities: dict[tuple[str, str], Event],
) -> Event | None:
    pid = int(e.get("pid", 0))
    tid = int(e.get("tid", 0))
    track = None
    overlapping = False
    if (pid, tid) in lanes:
        lane_kind, real_tid, lane_name = lanes[(pid, tid)]
        tid = real_tid
        if lane_kind == "named":
            track = lane_name
        else:
            overlapping = True
    thread_name = thread_names.get((pid, tid), "")
    cat = str(e.get("cat", ""))
    categories = tuple(c for c in cat.split(",") if c) if cat else ()
    args = _num(dict(e.get("args") or {}))
    own = _num(dict(e.get(OWN_KEY) or {}))
    level = int(own.get("level", 1))
    adjusted = float(own.get("adjusted_count", 1.0))
    error = None
    if ERROR_TYPE_KEY in args:
        frames = tuple(Frame(str(f[0]), str(f[1]), int(f[2])) for f in own.get("frames", ()))
        error = ErrorInfo(str(args.pop(ERROR_TYPE_KEY)), str(args.pop(ERROR_MESSAGE_KEY, "")), frames)
        causes = args.pop(ERROR_CAUSE_KEY, None)
        args.pop(ERROR_STACKTRACE_KEY, None)
        if causes is not None:
            error = error.with_causes(causes)
    name = str(e.get("name", ""))
    ts = _ns(e["ts"]) if "ts" in e else 0
    if ph == "X":
        flows = tuple(int(str(f), 16) for f in own.get("flows", ()))
        terminating = tuple(int(str(f), 16) for f in own.get("terminating_flows", ()))
        end = ts + _ns(e.get("dur", 0))
        return Event(
            "span", name, ts, end, level=level, metadata=args, thread_id=tid, thread_name=thread_name,
            error=error, categories=categories, track=track, flows=flows, terminating_flows=terminating,
            overlapping=overlapping, adjusted_count=adjusted,
        )  # fmt: skip
    if ph in ("i", "I"):
        if "prio" in own:
            src = own.get("source")
            source = Frame(str(src[2]), str(src[0]), int(src[1])) if src else None
            return Event(
                "log", name, ts, ts, level=level, metadata=args, thread_id=tid, thread_name=thread_name,
                error=error, track=track, value=own["prio"], source=source, adjusted_count=adjusted,
            )  # fmt: skip
        return Event(
            "instant", name, ts, ts, level=level, metadata=args, thread_id=tid, thread_name=thread_name,
            error=error, categories=categories, track=track, adjusted_count=adjusted,
        )  # fmt: skip
    if ph == "C":
        value = next(iter(args.values())) if args else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"counter value {value!r} is not a number")
        return Event(
            "counter", name, ts, ts, thread_id=tid, thread_name=thread_name, value=value,
            unit=own.get("unit"),
        )  # fmt: skip
    if ph == "b":
        key = (_async_id(e), cat)
        cats = () if categories == ("activity",) else categories
        on_track = own.get("track")
        activities[key] = Event(
            "activity", name, ts, None, level=level, metadata=args, thread_id=tid,
            thread_name=thread_name, error=error, categories=cats,
            track=None if on_track is None else str(on_track), adjusted_count=adjusted, pid=pid,
        )  # fmt: skip
        return None
    if ph == "e":
        act = activities.pop((_async_id(e), cat), None)
        if act is not None:
            act.end_ns = ts
            act.thread_id, act.thread_name = tid, thread_name
        return act
    return None


def _async_id(e: dict[str, Any]) -> str:
    """An async event's id: ``id2``'s local or global one, or ``id`` (as older files have it)."""
    id2 = e.get("id2")
    if isinstance(id2, dict):
        return str(id2.get("local", id2.get("global")))
    return str(e.get("id"))
