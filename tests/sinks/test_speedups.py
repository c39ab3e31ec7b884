"""The compiled writer loop (tracebridge._speedups) against the pure-Python one: the same bytes."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

import tracebridge
from tracebridge import _accel, spans
from tracebridge._config import Config
from tracebridge._model import ErrorInfo, Event, Frame, Loss, Record, SpanRecord, ThreadInfo, as_event
from tracebridge._recorder.session import Session
from tracebridge._sanitize import is_secret_key
from tracebridge.otel import processor as otel_processor
from tracebridge.otel.processor import _Finished
from tracebridge.reading import read_trace
from tracebridge.sinks.perfetto import writer as perfetto_writer
from tracebridge.sinks.perfetto.reader import iter_frames
from tracebridge.sinks.perfetto.writer import PerfettoWriter
from tracebridge.spans import Span

from helpers import perfetto_import
from strategies import thread_events

PID = os.getpid()
compiled = pytest.mark.skipif(not _accel.accelerated, reason="the compiled accelerator is not in use here")


def packets(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [bytes(p) for _, _, p in iter_frames(data)]


def write(path: Path, batches: list[tuple[Any, ...]], compiled: bool, compress: bool = False) -> list[bytes]:
    """The packets a writer makes of ``batches`` ((thread, events) or (thread, events, loss)) on one path
    (random track uuids seeded alike); ``compress``: the top-level records (compressed ones whole)."""
    saved = perfetto_writer.speedups
    perfetto_writer.speedups = saved if compiled else None
    state = random.getstate()
    random.seed(20261201)
    try:
        w = PerfettoWriter(path, start_ts=1_000, compress=compress)
        for thread, events, *loss in batches:
            w.write(thread, events, *loss)
        w.close()
    finally:
        random.setstate(state)
        perfetto_writer.speedups = saved
    # (not the preamble's clock snapshot, nor the stats: they read clocks; nor the process's name)
    # (compressed: nor the stats' two packets, which stay uncompressed)
    return packets(path)[2:-2] if compress else packets(path)[3:-1]


class _Formatted(int):  # (an id that formats its own way: the Python code writes it)
    def __format__(self, spec: str) -> str:
        return "custom-" + int.__format__(self, spec)


class _Masked(int):  # (a flow id that masks its own way)
    def __and__(self, other: object) -> int:
        return int(self) & 0xFF


@st.composite
def repeated_batches(draw: st.DrawFn) -> list[tuple[ThreadInfo, list[Event]]]:
    """A thread's events, then the same events again later (names, metadata and levels then interned:
    the compiled loop's own cases), on one or two threads."""
    out = []
    for i in range(draw(st.integers(1, 2))):
        thread = ThreadInfo(PID, 5000 + i, f"t{i}")
        events = draw(thread_events(thread.tid, thread.name, draw(st.integers(10_000, 10**12))))
        # Trace ids (the correlation id: 32 hex digits, or what Python makes of ids beyond 128 bits or
        # negative) and flows that end here, as OpenTelemetry spans carry them.
        ids = st.sampled_from(
            [0, 0, 1, True, 2**64 + 5, 2**128 - 1, 2**128, -3, _Formatted(5), _Masked(2**40 + 1)]
        )
        flows = st.lists(
            st.one_of(st.integers(0, 2**64 - 1), st.just(-1), st.just(2**70), st.just(_Masked(2**40 + 1))),
            max_size=2,
        )
        events = [
            dataclasses.replace(e, trace_id=draw(ids), terminating_flows=tuple(draw(flows)))
            if e.kind == "span"
            else e
            for e in events
        ]
        shift = 10**9
        again = [
            dataclasses.replace(
                e, start_ns=e.start_ns + shift, end_ns=None if e.end_ns is None else e.end_ns + shift
            )
            for e in events
        ]
        out += [(thread, events), (thread, again)]
    return out


@compiled
@settings(max_examples=150)
@given(repeated_batches())
def test_both_paths_write_the_same_bytes(tmp_path_factory: Any, batches: Any) -> None:
    d = tmp_path_factory.mktemp("speedups")
    assert write(d / "c.perfetto-trace", batches, True) == write(d / "py.perfetto-trace", batches, False)


def packets_made_in_python(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A counter ([n]) of the packets the Python code encodes (``_Sequence._packet``) from now on."""
    calls = [0]
    packet = perfetto_writer._Sequence._packet

    def counting(self: Any, *args: Any) -> bytes:
        calls[0] += 1
        return bytes(packet(self, *args))

    monkeypatch.setattr(perfetto_writer._Sequence, "_packet", counting)
    return calls


@compiled
def test_the_compiled_loop_takes_the_common_events(trace_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = packets_made_in_python(monkeypatch)
    me = ThreadInfo(PID, 7, "main")
    events = [
        Event(
            "span", "work", 1_000 + 10 * i, 1_005 + 10 * i, level=2, metadata={"i": i, "ok": True, "x": 0.5}
        )
        for i in range(1000)
    ] + [Event("instant", "tick", 20_000 + i, 20_000 + i, metadata={"s": "é"}) for i in range(1000)]
    # Log messages, each one new (its name and body interned as it is written), from one place.
    where = Frame("handle", "/srv/app.py", 12)
    events += [
        Event(
            "log", f"order {i} loaded", 30_000 + i, 30_000 + i, 2, {"logger": "shop"}, value=4, source=where
        )
        for i in range(1000)
    ]
    # Spans as OpenTelemetry's come: a trace id (the correlation id) and their own span id as a flow.
    events += [
        Event(
            "span",
            "otel",
            40_000 + 10 * i,
            40_005 + 10 * i,
            1,
            {"otel.scope": "b"},
            trace_id=2**100 + i,
            flows=(i + 1,),
        )
        for i in range(1000)
    ]
    w = PerfettoWriter(trace_path, start_ts=0)
    w.write(me, events)
    w.close()
    # Only the first of each shape goes through the Python code (it interns what else is new).
    assert calls[0] <= 8
    imported = perfetto_import(trace_path)
    assert imported.stats == {} and len(imported.slices) == 4000
    back = tracebridge.read(trace_path)
    assert [e.metadata for e in back if e.name == "work"][999] == {"i": 999, "ok": True, "x": 0.5}


@compiled
def test_both_paths_write_log_priorities_and_names_alike(tmp_path: Path) -> None:
    """Priorities outside Perfetto's range (or not ints) are written as INFO on both paths; bools and int
    subclasses as the ints they are. A log's slice is named after its template."""
    import enum

    class Prio(enum.IntEnum):
        WARN = 5

    class Odd(int):  # (compares its own way: the Python code decides)
        def __ge__(self, other: object) -> bool:
            return False

        def __le__(self, other: object) -> bool:
            return False

    me = ThreadInfo(PID, 7, "main")
    events = [
        Event("log", f"m{i}", 1_000 + i, 1_000 + i, value=v)
        for i, v in enumerate([-1, 8, True, None, 3, 2.0, Prio.WARN, 2**70, "6", Odd(3)])
    ]
    # Named after their template, unless it is the message itself or not a string.
    events += [
        Event("log", f"m{i}", 2_000 + i, 2_000 + i, metadata={"message_template": t, "k": 1}, value=4)
        for i, t in enumerate(["m%d", "m%d", "m1", 7, "", "mé%d"])
    ]
    batches = [(me, events), (me, [dataclasses.replace(e, start_ns=e.start_ns + 100) for e in events])]
    assert write(tmp_path / "c.pt", batches, True) == write(tmp_path / "py.pt", batches, False)
    names = [n for n, _, _, _ in perfetto_import(tmp_path / "c.pt").slices]  # (in time order)
    assert names[20:26] == ["m%d", "m%d", "m1", "m3", "m4", "mé%d"]  # (no string, or empty: the message)
    back = tracebridge.read(tmp_path / "c.pt")[20:26]
    assert [e.metadata.get("message_template") for e in back] == ["m%d", "m%d", "m1", 7, "", "mé%d"]


def test_which_path_runs_and_the_pure_path_can_be_forced() -> None:
    code = "import tracebridge; print(tracebridge.accelerated)"
    pure = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TRACEBRIDGE_PURE_PYTHON": "1"},
        check=True,
    )
    assert pure.stdout.strip() == "False"
    assert tracebridge.accelerated is _accel.accelerated


def test_version_says_which_path_runs() -> None:
    from tracebridge.cli import main

    with pytest.raises(SystemExit):
        main(["--version"])
    code = "from tracebridge.cli import main; main(['--version'])"
    env = {**os.environ, "TRACEBRIDGE_PURE_PYTHON": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert (
        out.stdout.startswith("tracebridge ") and "pure Python: TRACEBRIDGE_PURE_PYTHON is set" in out.stdout
    )


# -- records to events: compact spans become events in compiled code -----------------------------------

#: Names the compiled step takes, and names it leaves to the Python code (TraceMe's encoded form, NUL,
#: non-ASCII, too long), with one that has a code location.
_names = st.one_of(
    st.sampled_from(["work", "db.query", "", "a#b", "enc#k=v#", "nul\x00", "é", "x" * 1025, "located"]),
    st.text(max_size=8),
)
_times = st.one_of(st.integers(0, 10**6), st.integers(-(2**70), 2**70))


@st.composite
def record_batches(draw: st.DrawFn) -> list[Any]:
    """Records as a thread queues them: compact span tuples (some begun before the session), span
    objects, and log messages, instants and counter samples as sources record them."""
    out: list[Any] = []
    for _ in range(draw(st.integers(0, 30))):
        name = draw(_names)
        level = draw(st.one_of(st.integers(1, 4), st.integers(-(2**65), 2**65)))
        start = draw(_times)
        end = start + draw(st.integers(0, 10**6))
        shape = draw(st.integers(0, 7))
        if shape >= 6:  # a log message, instant or counter sample (Record)
            kind = draw(st.sampled_from(["log", "log", "instant", "counter"]))
            rec = Record(
                kind,
                name,
                BASE + start,
                draw(st.sampled_from([BASE + start, None])),
                level,
                draw(st.none() | _metadata),
                value=draw(st.sampled_from([None, 4, 7, 2.5])),
                source=draw(st.sampled_from([None, Frame("f", "/a.py", 3)])),
                error=ErrorInfo("ValueError", "bad", ()) if draw(st.integers(0, 9)) == 0 else None,
                trace_id=draw(st.sampled_from([0, 7])),
                span_id=draw(st.sampled_from([0, 9])),
            )
            rec.adjusted_count = draw(st.sampled_from([1.0, 1.0, 4.0]))
            out.append(rec)
        elif shape == 0:
            out.append(SpanRecord.of(name, level, BASE + start, BASE + end))
        elif shape in (1, 2):  # a recorded span object (metadata, ids, a parent, sampling weight, ...)
            s = spans._made(Span, name, level, draw(st.none() | _metadata))
            s.start_ns, s.end_ns = BASE + start, BASE + end
            s.parent = draw(st.sampled_from([None, *[r for r in out if type(r) is Span]]))
            s._lazy = None
            s._trace_id = draw(st.sampled_from([0, 0, 7, 2**100]))
            s._span_id = draw(st.sampled_from([0, 0, 9]))
            s.adjusted_count = draw(st.sampled_from([1.0, 1.0, 4.0]))
            s.overlapping = draw(st.booleans()) and draw(st.booleans())
            if draw(st.integers(0, 9)) == 0:
                s.error = ErrorInfo("ValueError", "bad", ())
            out.append(s)
        else:
            out.append((name, level, BASE + start, BASE + end))
    return out


#: Metadata as spans carry it: keys the writer takes as they are, secrets, keys with a meaning of their
#: own, the file's reserved names, the code location; plain values and values that need work.
_KEYS = ["path", "n", "ok", "ratio", "none", "password", "api_token", "category", "track", "flows",
         "level", "code.filepath", "é", "with space"]  # fmt: skip
_metadata = st.dictionaries(
    st.sampled_from(_KEYS),
    st.one_of(
        st.text(max_size=6),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.booleans(),
        st.none(),
        st.just("x" * 20_000),
        st.just("nul\x00"),
        st.lists(st.integers(), max_size=2),
        st.just({"nested": [1]}),
    ),
    max_size=4,
)


BASE = 10**12


class _TakesCompact:  # (a sink as the session sees it: only whether it takes compact events)
    takes_compact = True


def queued(records: list[Any]) -> Any:
    """``records`` as the compiled writer takes them off a thread's queue: a RecordBatch, in which the
    CompactSpan tuples are held as C values."""
    assert _accel.speedups is not None
    q = _accel.speedups.RecordQueue()
    for rec in records:
        if type(rec) is tuple:
            q.append_compact(*rec)
        else:
            q.append(rec)
    batch = q.take(len(records) + 3)
    assert len(q) == 0 and len(batch) == len(records)
    return batch


def convert(
    records: list[Any], compiled: bool, compact: bool = False, batch: bool = False, as_made: bool = False
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """What a session's writer makes of ``records`` on one path: events, recorded and dropped counts.
    ``compact``: for a sink that takes compact events (as the Perfetto writer does); ``batch``: the
    records taken off a compiled queue; ``as_made``: the events as the sink gets them (else a list)."""
    from tracebridge._recorder import session as session_module

    saved = session_module.speedups
    session_module.speedups = saved if compiled else None
    try:
        s = session_module.Session(3, None, "none", Config())
        if compact:
            s._sink = _TakesCompact()  # type: ignore[assignment]
        s.start_ns = BASE
        s.clock_offset = 12_345
        for key in _KEYS:  # (the sanitizer's cache of secret keys, warm: the compiled step reads it)
            is_secret_key(key, s.limits)
        events = s._events(queued(records) if batch else list(records), ThreadInfo(PID, 42, "worker"))
        # (for a sink that takes compact events, an EventBatch: a sequence, its compact spans as tuples)
        events = events if as_made else list(events)
        return events, dict(s.stats.recorded), {k: dict(v) for k, v in s.stats.dropped.items()}
    finally:
        session_module.speedups = saved


@compiled
@settings(max_examples=200)
@given(record_batches())
def test_both_paths_make_the_same_events_of_span_records(records: list[Any]) -> None:
    from tracebridge._model import CODE_LOCATIONS

    CODE_LOCATIONS.setdefault("located", ("app.py", 12, "located"))
    assert convert(records, True) == convert(records, False)


@compiled
@settings(max_examples=200)
@given(record_batches(), st.booleans())
def test_records_taken_off_a_queue_make_the_events_records_make(records: list[Any], compact: bool) -> None:
    """The writer reads a RecordBatch in place (compact spans as C values): the same events and counts
    as of the records themselves, on both paths; the batch gives the records back as they were."""
    from tracebridge._model import CODE_LOCATIONS

    CODE_LOCATIONS.setdefault("located", ("app.py", 12, "located"))
    assert list(queued(records)) == records
    expected = convert(records, True, compact)
    assert convert(records, True, compact, batch=True) == expected
    if not compact:  # (the pure path makes no compact events)
        assert convert(records, False) == expected


@compiled
@settings(max_examples=200)
@given(record_batches())
def test_compact_events_stand_for_their_events_and_write_the_same_bytes(
    tmp_path_factory: Any, records: list[Any]
) -> None:
    """A sink that takes compact events gets the events it would have got (a compact event is the Event
    it stands for, less the thread, which the batch names), counted alike, and writes the same bytes."""
    from tracebridge._model import CODE_LOCATIONS

    CODE_LOCATIONS.setdefault("located", ("app.py", 12, "located"))
    events, recorded, dropped = convert(records, True)
    compact, compact_recorded, compact_dropped = convert(records, True, compact=True)
    whole = [
        dataclasses.replace(as_event(ev), thread_id=42, thread_name="worker") if type(ev) is tuple else ev
        for ev in compact
    ]
    assert whole == events and (compact_recorded, compact_dropped) == (recorded, dropped)
    thread = ThreadInfo(PID, 42, "worker")
    d = tmp_path_factory.mktemp("compact")
    expected = write(d / "events.perfetto-trace", [(thread, events)], True)
    assert write(d / "compact.perfetto-trace", [(thread, compact)], True) == expected
    assert write(d / "python.perfetto-trace", [(thread, whole)], False) == expected


@compiled
def test_compact_events_are_made_whole() -> None:
    """Every field of a compiled event is what the Event class would give it (defaults included), and
    each event has a metadata dict of its own."""
    from tracebridge._model import CODE_LOCATIONS

    CODE_LOCATIONS["located_too"] = ("lib.py", 3, "located_too")
    events, recorded, dropped = convert(
        [("plain", 2, BASE + 5, BASE + 9), ("located_too", 1, BASE + 6, BASE + 7), ("early", 1, 0, 1)], True
    )
    assert events == [
        Event("span", "plain", BASE + 5 + 12_345, BASE + 9 + 12_345, 2, {}, 42, "worker"),
        Event(
            "span",
            "located_too",
            BASE + 6 + 12_345,
            BASE + 7 + 12_345,
            1,
            {"code.filepath": "lib.py", "code.lineno": 3, "code.function": "located_too"},
            42,
            "worker",
        ),
    ]
    assert type(events[0]) is Event and events[0].metadata is not events[1].metadata
    assert recorded["span"] == 2 and dropped == {"outside_session": {"span": 1}}
    # For a sink that takes them: compact events, the metadata tracebridge made shared (only the writer
    # reads it), a span's own copied (the application may still change it).
    s = spans._made(Span, "annotated", 2, {"path": "a"})
    s.start_ns, s.end_ns = BASE + 8, BASE + 9
    s.parent, s._lazy = None, None
    records = [("plain", 2, BASE + 5, BASE + 9), ("located_too", 1, BASE + 6, BASE + 7)] * 2 + [s]
    compact, _, _ = convert(records, True, compact=True)
    located = {"code.filepath": "lib.py", "code.lineno": 3, "code.function": "located_too"}
    assert compact == [
        ("plain", 2, BASE + 5 + 12_345, BASE + 9 + 12_345, {}),
        ("located_too", 1, BASE + 6 + 12_345, BASE + 7 + 12_345, located),
    ] * 2 + [("annotated", 2, BASE + 8 + 12_345, BASE + 9 + 12_345, {"path": "a"})]
    assert compact[0][4] is compact[2][4] and compact[1][4] is compact[3][4]
    assert compact[4][4] is not s.metadata


# -- compact spans from a thread's queue to the file, with no object for each ---------------------------


@st.composite
def busy_batches(draw: st.DrawFn) -> list[Any]:
    """Records as a busy thread queues them: mostly compact spans (many beginning or ending at the same
    instant, nested or one after another, some before the session, levels past 32 bits, names the
    Python code takes), spans with metadata of their own, and records the Python code converts (spans
    that failed, counter samples)."""
    out: list[Any] = []
    for i in range(draw(st.integers(0, 40))):
        name = draw(st.sampled_from(["load", "load", "save", "located", "x" * 1025, "a@b"]))
        level = draw(st.sampled_from([1, 2, 2, 3, 2**40]))
        start = BASE + draw(st.integers(-2, 12))
        end = start + draw(st.integers(0, 4))
        shape = draw(st.integers(0, 9))
        if shape <= 5:
            out.append((name, level, start, end))
        elif shape <= 8:
            s = spans._made(
                Span, name, level, draw(st.sampled_from([None, {"n": i}, {"ok": True, "s": "v"}]))
            )
            s.start_ns, s.end_ns = start, end
            s.parent, s._lazy = None, None
            if shape == 8:
                s.error = ErrorInfo("ValueError", "bad", ())
            out.append(s)
        else:
            out.append(Record("counter", "queue", start, None, 1, None, value=i))
    return out


@compiled
@settings(max_examples=150)
@given(busy_batches(), st.booleans())
def test_a_batch_taken_off_a_queue_writes_the_bytes_of_its_events(
    tmp_path_factory: Any, records: list[Any], lost: bool
) -> None:
    """The Perfetto writer gets an EventBatch (its compact spans C values, what the Python code converted
    in their places) and writes what the pure-Python writer makes of the same events, byte for byte:
    events at the same instant in the same order, after a loss's mark, and again once all is interned."""
    from tracebridge._model import CODE_LOCATIONS

    CODE_LOCATIONS.setdefault("located", ("app.py", 12, "located"))
    made, recorded, dropped = convert(records, True, compact=True, batch=True, as_made=True)
    assert type(made) is _accel.speedups.EventBatch
    assert (list(made), recorded, dropped) == convert(records, True, compact=True)
    whole = [as_event(ev) for ev in made]
    thread = ThreadInfo(PID, 42, "worker")
    loss = [Loss({"queue_full": 2}, BASE - 9, BASE - 1)] if lost else []
    d = tmp_path_factory.mktemp("batch")
    c = write(d / "c.perfetto-trace", [(thread, made, *loss), (thread, made)], True)
    assert c == write(d / "py.perfetto-trace", [(thread, whole, *loss), (thread, whole)], False)


@compiled
def test_compact_spans_reach_the_file_with_no_object_each(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain spans queued compact reach the encoder as C values (an EventBatch, read from Python as
    compact events), and their packets come back in one buffer (a PacketRun): only the first span of a
    kind goes through the Python code, which interns its name."""
    from tracebridge._model import CODE_LOCATIONS

    CODE_LOCATIONS["located_here"] = ("lib.py", 3, "located_here")
    calls = packets_made_in_python(monkeypatch)
    records = [
        (("load", "located_here")[i % 2], 2, BASE + 10 * i, BASE + 10 * i + 5 * (i % 3)) for i in range(2000)
    ]
    made, recorded, _ = convert(records, True, compact=True, batch=True, as_made=True)
    assert type(made) is _accel.speedups.EventBatch and len(made) == 2000 and recorded["span"] == 2000
    located = {"code.filepath": "lib.py", "code.lineno": 3, "code.function": "located_here"}
    assert made[0] == ("load", 2, BASE + 12_345, BASE + 12_345, {})
    assert made[-1] == ("located_here", 2, BASE + 19_990 + 12_345, BASE + 19_995 + 12_345, located)
    assert made[1:3] == [tuple(made[1]), tuple(made[2])] and made[-1] == made[1999]
    w = PerfettoWriter(trace_path, start_ts=0)
    seq = perfetto_writer._Sequence(w, 9, ThreadInfo(PID, 42, "worker"))
    out = seq.encode(made)
    assert [type(p) for p in out] == [_accel.speedups.PacketRun]
    pieces = _accel.speedups.join_chunks(out, 1)
    assert len(pieces) == 1 + 2 * 2000  # (the restart packets: one piece)
    # As the bytes it stands for: its length, its bytes, its memory (and the batch's) counted.
    assert len(out[0]) == sum(map(len, pieces)) and bytes(out[0]) == b"".join(pieces)
    assert sys.getsizeof(out[0]) > len(out[0]) and sys.getsizeof(made) > 2000 * 32
    assert calls[0] == 2  # (the BEGIN of the first of each kind)
    w.write(ThreadInfo(PID, 42, "worker"), made)
    w.close()
    assert Counter(e.name for e in read_trace(trace_path).events) == {"load": 1000, "located_here": 1000}


@compiled
def test_an_event_batch_is_settled_before_it_is_encoded(trace_path: Path) -> None:
    records = [("load", 2, BASE + 5, BASE + 9), Record("counter", "queue", BASE + 6, None, 1, None, value=3)]
    assert _accel.speedups is not None
    made = _accel.speedups.span_events(queued(records), BASE, 0, 42, "w", {}, None, True)[0]
    assert made.leftovers() == [records[1]]
    with pytest.raises(ValueError, match="one event"):
        made.settled([])
    w = PerfettoWriter(trace_path, start_ts=0)
    seq = perfetto_writer._Sequence(w, 9, ThreadInfo(PID, 42, "worker"))
    with pytest.raises(TypeError, match="settled"):
        seq.encode(made)
    w.close()
    settled = made.settled([None])
    assert list(settled) == [("load", 2, BASE + 5, BASE + 9, {})] and settled.leftovers() == []


@compiled
def test_both_paths_cut_a_large_batch_into_the_same_compressed_records(tmp_path: Path) -> None:
    """A batch larger than a compressed record holds: the records are cut between the same packets."""
    records = [("load", 2, BASE + 10 * i, BASE + 10 * i + 5) for i in range(30_000)]
    made = convert(records, True, compact=True, batch=True, as_made=True)[0]
    thread = ThreadInfo(PID, 42, "worker")
    c = write(tmp_path / "c.perfetto-trace", [(thread, made)], True, compress=True)
    py = write(
        tmp_path / "py.perfetto-trace", [(thread, [as_event(ev) for ev in made])], False, compress=True
    )
    assert c == py and len(c) >= 2  # (cut once at least)


@compiled
@pytest.mark.parametrize("depth", [3, 3000])
def test_both_paths_order_nested_spans_alike(tmp_path: Path, depth: int) -> None:
    """Spans queued as they end, innermost first: a shallow nest (the compiled sort's linear case) and
    one 3,000 deep (its fallback), each after a run of sequential spans."""
    me = ThreadInfo(PID, 11, "main")
    events = [Event("span", f"seq{i % 7}", 100 + 10 * i, 105 + 10 * i) for i in range(500)]
    base = 10_000
    events += [Event("span", f"nest{k % 5}", base + k, base + 2 * depth - k) for k in reversed(range(depth))]
    batches = [(me, events)]
    c = write(tmp_path / "c.perfetto-trace", batches, True)
    assert c == write(tmp_path / "py.perfetto-trace", batches, False)
    assert len(c) == 2 * (500 + depth) + 1  # (every BEGIN and END, after the packet that starts the state)


@compiled
@given(st.lists(st.binary(max_size=40), max_size=60), st.integers(1, 120))
def test_both_paths_cut_compressed_chunks_alike(packets: list[bytes], limit: int) -> None:
    saved = perfetto_writer.speedups
    try:
        compiled_chunks = perfetto_writer._join_chunks(packets, limit)
        perfetto_writer.speedups = None
        assert compiled_chunks == perfetto_writer._join_chunks(packets, limit)
    finally:
        perfetto_writer.speedups = saved
    assert b"".join(compiled_chunks) == b"".join(packets)


def _span_event(level: int, start: int) -> Event:
    return Event("span", "x", start, start + 10, level, {}, 7, "t")


@compiled
@pytest.mark.parametrize(
    "batches",
    [
        [[_span_event(1, 2000), _span_event(-(2**70), 3000), _span_event(2**70, 4000)]],  # levels past C long
        [[_span_event(1, 2**63 + 5)], [_span_event(1, 5000)], [_span_event(1, 6000)]],  # a clock past int64
        [[_span_event(1, -(2**63) + 5)], [_span_event(1, 5000)]],
    ],
    ids=["huge levels", "time past int64", "time near int64's minimum"],
)
def test_both_paths_take_values_beyond_int64_alike(tmp_path: Path, batches: list[list[Event]]) -> None:
    """(Found in review: the compiled loop raised OverflowError on these, losing the batch, and a
    sequence whose last timestamp passed int64 lost every later batch.)"""
    me = ThreadInfo(PID, 7, "t")
    pairs = [(me, batch) for batch in batches]
    c = write(tmp_path / "c.perfetto-trace", pairs, True)
    assert c == write(tmp_path / "py.perfetto-trace", pairs, False)
    assert len(c) >= 2 * sum(map(len, batches))


@compiled
def test_a_perfetto_writer_that_reads_its_events_gets_events(tmp_path: Path) -> None:
    """A subclass that overrides ``write`` (it may read the events: here, their levels) and a wrapper
    that forwards to a writer get Events, never compact events; so do trace lines turned on while the
    writer works."""

    class LevelTwoOnly(PerfettoWriter):
        def write(self, thread: ThreadInfo, events: list[Event], loss: Any = None) -> int:
            super().write(thread, [e for e in events if e.level <= 2], loss)
            return len(events)

    class Forwarding:
        def __init__(self, inner: PerfettoWriter) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def write(self, thread: ThreadInfo, events: list[Event], loss: Any = None) -> int:
            assert all(type(e) is Event for e in events)
            return self.inner.write(thread, events, loss)

    assert PerfettoWriter.takes_compact and not LevelTwoOnly.takes_compact
    for name, factory in [
        ("sub", lambda s: LevelTwoOnly(s.path)),
        ("wrap", lambda s: Forwarding(PerfettoWriter(s.path))),
    ]:
        path = tmp_path / f"{name}.perfetto-trace"
        tracebridge.start(level=3, output=path, sink=factory)
        for level in (1, 2, 3) * 10:
            with tracebridge.span(f"l{level}", level=level):
                pass
        session = tracebridge.stop()
        assert session.stats.lost == {}, name
        expected = {"l1": 10, "l2": 10} if name == "sub" else {"l1": 10, "l2": 10, "l3": 10}
        assert Counter(e.name for e in read_trace(path).events) == expected, name


@compiled
def test_trace_lines_turned_on_between_converting_and_writing_get_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """configure(log_lines=True) on an application thread may land after the writer made compact events
    of a batch and before it writes them: the trace lines still get Events (with their thread)."""
    tracebridge.configure(log_lines=True)
    try:
        lines = tracebridge.start(level=2, output=tmp_path / "lines.perfetto-trace").lines
        tracebridge.configure(log_lines=False)
        converted = Session._events

        def lines_on_meanwhile(self: Session, records: list[Any], info: ThreadInfo) -> list[Any]:
            out = converted(self, records, info)
            self.lines = lines
            return out

        monkeypatch.setattr(Session, "_events", lines_on_meanwhile)
        with caplog.at_level(logging.INFO):
            with tracebridge.span("late_line"):
                pass
            session = tracebridge.stop()  # (the writer logs the line)
    finally:
        tracebridge.configure(log_lines=False)
    assert session.stats.internal_errors == 0
    assert any("late_line" in r.getMessage() for r in caplog.records), caplog.text


# -- ended OpenTelemetry spans: the copy on_end queues, and its events -----------------------------------

_REMOTE = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
_STATUSES = [None, Status(StatusCode.OK), Status(StatusCode.ERROR, "declined"), Status(StatusCode.ERROR)]
_otel_values = [
    st.text(max_size=6),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.booleans(),
    st.just(("a", "b")),
    st.just("x" * 20_000),
    st.just("https://u:p@h/?token=x"),
]
_otel_attributes = st.dictionaries(
    st.sampled_from(["item", "queue", "ok", "ratio", "tags", "password", "category", "flows", "level", "é"]),
    st.one_of(*_otel_values),
    max_size=4,
)


class _CountingIds(IdGenerator):
    """Ids in sequence (hypothesis strategies must not draw from the random module)."""

    def __init__(self) -> None:
        self.n = 0

    def generate_span_id(self) -> int:
        self.n += 1
        return self.n

    def generate_trace_id(self) -> int:
        self.n += 1
        return self.n << 64 | self.n


@st.composite
def ended_spans(draw: st.DrawFn) -> list[ReadableSpan]:
    """Ended spans as the SDK hands them to a processor: attributes, kinds, statuses, span events (an
    exception among them), links, local and remote parents, scopes, resources; and a ReadableSpan made
    directly (its attributes a plain dict)."""
    ended: list[ReadableSpan] = []

    class Catch(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    resource = draw(st.sampled_from([Resource.create({"service.name": "shop"}), Resource.get_empty()]))
    provider = TracerProvider(resource=resource, id_generator=_CountingIds(), shutdown_on_exit=False)
    provider.add_span_processor(Catch())
    tracer = provider.get_tracer(draw(st.sampled_from(["tests", ""])))
    parent = None
    for _ in range(draw(st.integers(1, 5))):
        context = draw(st.sampled_from([None, "remote", "parent"]))
        span = tracer.start_span(
            draw(_names),
            context=(
                set_span_in_context(NonRecordingSpan(_REMOTE))
                if context == "remote"
                else set_span_in_context(parent)
                if context == "parent" and parent is not None
                else None
            ),
            kind=draw(st.sampled_from(list(SpanKind))),
            attributes=draw(_otel_attributes),
            links=[Link(_REMOTE)] if draw(st.integers(0, 4)) == 0 else [],
        )
        if draw(st.integers(0, 4)) == 0:
            span.add_event("cache_miss", {"key": "k"})
        if draw(st.integers(0, 4)) == 0:
            span.record_exception(ValueError("bad"))
        status = draw(st.sampled_from(_STATUSES))
        if status is not None:
            span.set_status(status)
        if parent is None:
            parent = span
        else:
            span.end()
    if parent is not None:
        parent.end()
    ended.append(ReadableSpan("direct", context=_REMOTE, attributes={"a": 1}, start_time=5, end_time=9))
    return ended


def _slots(rec: Any) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in _Finished.__slots__}


@compiled
@settings(max_examples=100, deadline=None)
@given(ended_spans(), st.booleans())
def test_both_paths_copy_ended_spans_alike(ended: list[ReadableSpan], overlapping: bool) -> None:
    """The compiled copy of an ended span holds what the Python one does; it copies the SDK's spans and
    leaves a span of another shape to the Python code."""
    for span in ended:
        made = otel_processor._copy(span, 2, overlapping)
        if span.name == "direct":
            assert made is None
            continue
        assert type(made) is _Finished
        assert _slots(made) == _slots(_Finished(span, 2, overlapping))


def materialized(records: list[Any], compiled: bool, start: int) -> tuple[Any, ...]:
    """What a session's writer makes of ``records`` (ended spans among them) on one path: events,
    recorded and dropped counts, and the name the process was given."""
    from tracebridge._recorder import session as session_module

    saved = session_module.speedups
    session_module.speedups = saved if compiled else None
    otel_processor._named[0] = (None, None)
    try:
        s = session_module.Session(3, None, "none", Config())
        s.start_ns, s.clock_offset, s.wall_offset_ns = start, 12_345, WALL
        info = ThreadInfo(PID, 42, "worker")
        events = s._events(s._materialize(list(records), info), info)
        return events, dict(s.stats.recorded), {k: dict(v) for k, v in s.stats.dropped.items()}, s._rename
    finally:
        session_module.speedups = saved
        otel_processor._named[0] = (None, None)


WALL = 1_700_000_000 * 10**9


@st.composite
def finished_batches(draw: st.DrawFn) -> tuple[list[Any], int]:
    """Ended spans queued as the processor queues them (copied either way), some with fields no SDK span
    has (no ids, no times, times out of range, an end before the start), announced, on a track of their
    own; among other records. And the session's start (some spans began before it)."""
    out: list[Any] = []
    resources = [
        Resource.create({"service.name": "shop"}),
        Resource.create({"service.name": "billing"}),
        None,
    ]
    for span in draw(ended_spans()):
        rec = _Finished(span, draw(st.integers(1, 3)), draw(st.booleans()))
        rec.start_time = WALL + 10**9 + draw(st.integers(0, 10**6))
        rec.end_time = rec.start_time + draw(st.integers(-10, 10**6))
        rec.resource = draw(st.sampled_from(resources))
        shape = draw(st.integers(0, 12))
        if shape == 1:
            rec.span_id = draw(st.sampled_from([0, 2**64, -1]))
        elif shape == 2:
            rec.start_time = draw(st.sampled_from([None, 2**70, 0]))
        elif shape == 3:
            rec.end_time = draw(st.sampled_from([None, 0, 2**70]))
        elif shape == 4:  # (without span events: their instants would ask for a trace id, made at random)
            rec.trace_id, rec.events = 0, ()
        elif shape == 5:
            rec.announced = True
        elif shape == 6:
            rec.track = f"trace {rec.trace_id:032x}"
        elif shape == 7:
            rec.attributes = None
        out.append(rec)
        if draw(st.integers(0, 5)) == 0:
            out.append(("plain", 1, 10**12 + 5, 10**12 + 9))
    start = draw(st.sampled_from([0, 10**9 - 12_345 + 500_000]))
    return out, start


@compiled
@settings(max_examples=150, deadline=None)
@given(finished_batches(), st.booleans())
def test_both_paths_make_the_same_events_of_ended_spans(batch: tuple[list[Any], int], warm: bool) -> None:
    """The compiled conversion of ended spans gives the events, counts and process name the Python one
    does, whether the sanitizer's cache of keys knows the attributes' names or not."""
    records, start = batch
    if warm:
        for key in ("item", "queue", "otel.scope", "otel.kind", "otel.status"):
            is_secret_key(key, Config().limits)
    assert materialized(records, True, start) == materialized(records, False, start)


@compiled
def test_the_compiled_writer_takes_the_common_ended_spans() -> None:
    """Plain ended spans become their events without their Python materialize(); the others go through
    it, in their place."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}), shutdown_on_exit=False)
    ended: list[ReadableSpan] = []

    class Catch(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            ended.append(span)

    provider.add_span_processor(Catch())
    tracer = provider.get_tracer("tests")
    for i in range(3):
        with tracer.start_as_current_span("work", attributes={"item": i}) as span:
            if i == 1:
                span.add_event("cache_miss")
    records = [otel_processor._copy(span, 2, False) for span in ended]
    records[2].start_time = records[0].start_time = WALL + 10**9
    records[1].start_time = WALL + 10**9 + 1
    s = Session(3, None, "none", Config())
    s.start_ns, s.clock_offset, s.wall_offset_ns = 0, 12_345, WALL
    slow: list[Any] = []
    s._materialize_one = lambda rec: slow.append(rec) or rec.materialize(s)  # type: ignore[method-assign]
    made = s._materialize(records, ThreadInfo(PID, 42, "worker"))
    assert slow == [records[1]]
    assert [type(r).__name__ for r in made] == ["Event", "SpanRecord", "Record", "Event"]
    assert made[0].flows == (made[0].span_id,) and made[0].metadata == {"item": 0, "otel.scope": "tests"}
    assert s._rename == "shop"
