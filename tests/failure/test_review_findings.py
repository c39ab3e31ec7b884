"""Faults found in review: short writes, the stop deadline under overload, clock restarts, activities
racing stop, spans outliving their thread, equal timestamps, drop marks after failed writes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._model import Event, Loss, ThreadInfo
from tracebridge._runtime import RT
from tracebridge.reading import read_trace
from tracebridge.sinks.perfetto import writer as perfetto_writer
from tracebridge.sinks.perfetto.writer import PerfettoWriter

from helpers import comparable, decode, perfetto_import

ME = ThreadInfo(os.getpid(), 9, "t")


class ShortWrites:
    """A file that takes at most a few bytes per write, like a filling disk."""

    def __init__(self, real: Any, limit: int = 7) -> None:
        self.real = real
        self.limit = limit

    def write(self, data: Any) -> int:
        return int(self.real.write(bytes(data[: self.limit])))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("ext", [".perfetto-trace", ".json"])
def test_short_writes_are_completed(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"t{ext}"
    tracebridge.start(output=path)
    sink = RT.session._sink  # type: ignore[union-attr]
    sink._out.file = ShortWrites(sink._out.file)
    for i in range(50):
        with tracebridge.span("s", i=i):
            pass
    session = tracebridge.stop()
    trace = read_trace(path)
    assert trace.problems == []
    assert len(trace.events) == 50 == session.stats.recorded["span"]


def test_stop_deadline_with_queue_full_drops_finishes(trace_path: Path, lenient: None) -> None:
    tracebridge.configure(thread_buffer=50_000, flush_interval=1000)
    try:
        tracebridge.start(output=trace_path)
        for _ in range(60_000):  # 10,000 dropped as queue_full
            with tracebridge.span("op"):
                pass
        writer = RT.session._writer  # type: ignore[union-attr]
        session = tracebridge.stop(timeout=0.01)
        assert writer is not None
        writer.join(timeout=10)
        assert not writer.is_alive()
    finally:
        tracebridge.configure(thread_buffer=65536, flush_interval=0.1)
    dropped = session.stats.dropped
    assert dropped["queue_full"] == {"span": 10_000}
    total = session.stats.recorded["span"] + sum(by["span"] for by in dropped.values())
    assert total == 60_000
    assert read_trace(trace_path).stats is not None  # the file was closed properly


def test_sequence_restart_never_moves_the_clock_back(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(perfetto_writer, "MAX_INTERNED", 20)
    w = PerfettoWriter(trace_path)
    written = []
    for batch in range(5):
        events = [
            Event(
                "span",
                f"name-{batch}-{i}",
                10_000 + batch * 1000 + i * 10,
                10_005 + batch * 1000 + i * 10,
                1,
                {},
                ME.tid,
                ME.name,
            )
            for i in range(30)
        ]
        w.write(ME, events)
        written += events
    outer = Event("span", "outer", 5_000, 20_000, 1, {}, ME.tid, ME.name)
    w.write(ME, [outer])  # begins before every restart of the sequence's clock
    w.close()
    trace = read_trace(trace_path)
    assert trace.problems == []
    assert sorted(map(comparable, trace.events), key=repr) == sorted(
        map(comparable, [*written, outer]), key=repr
    )
    snapshots = [p.clock_snapshot for p in decode(trace_path).packet if p.HasField("clock_snapshot")]
    per_sequence = [next(c.timestamp for c in s.clocks if c.clock_id == 6) for s in snapshots[1:]]
    assert per_sequence == sorted(per_sequence) and len(per_sequence) > 2


def test_activities_racing_stop_never_raise(lenient: None) -> None:
    for _ in range(5):
        tracebridge.start()
        go = threading.Event()

        def starter(go: threading.Event = go) -> None:
            go.wait()
            for _ in range(2000):
                tracebridge.activity_start(lambda: "lazy activity")

        threads = [threading.Thread(target=starter) for _ in range(3)]
        for t in threads:
            t.start()
        go.set()
        time.sleep(0.001)
        session = tracebridge.stop()
        for t in threads:
            t.join(timeout=30)
        assert session.stats.open_activities == sum(1 for e in session.events if e.kind == "activity")


def test_span_ending_after_its_thread_died_is_recorded() -> None:
    @tracebridge.traced
    def gen():  # type: ignore[no-untyped-def]
        yield 1
        yield 2

    holder: dict[str, Any] = {}

    def begin() -> None:
        it = gen()
        next(it)
        holder["it"] = it

    tracebridge.start()
    t = threading.Thread(target=begin)
    t.start()
    t.join()
    tracebridge.flush()
    tracebridge.flush()
    tracebridge.flush()  # the dead thread's state is forgotten
    list(holder["it"])
    session = tracebridge.stop()
    assert [e.name for e in session.events] == [
        "test_span_ending_after_its_thread_died_is_recorded.<locals>.gen"
    ]


def test_equal_timestamps_nest_in_any_arrival_order(tmp_path: Path) -> None:
    parent = Event("span", "parent", 100, 110, 1, {}, ME.tid, ME.name)
    first = Event("span", "first_child", 100, 104, 1, {}, ME.tid, ME.name)
    last = Event("span", "last_child", 106, 110, 1, {}, ME.tid, ME.name)
    for order in ([parent, first, last], [first, last, parent], [last, parent, first]):
        path = tmp_path / "t.perfetto-trace"
        w = PerfettoWriter(path, start_ts=0)
        w.write(ME, list(order))
        w.close()
        trace = read_trace(path)
        assert trace.problems == []
        assert {(e.name, e.start_ns, e.end_ns) for e in trace.events} == {
            ("parent", 100, 110),
            ("first_child", 100, 104),
            ("last_child", 106, 110),
        }


def test_drop_mark_survives_a_failed_write(trace_path: Path) -> None:
    w = PerfettoWriter(trace_path, compress=False)
    real = w._out.file

    class Failing:
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    w._out.file = Failing()  # type: ignore[assignment]
    with pytest.raises(OSError):
        w.write(ME, [Event("instant", "lost", 2_000, 2_000, 1, {}, ME.tid, ME.name)], Loss({"x": 5}, 1, 1))
    w._out.file = real
    w.write(ME, [Event("instant", "kept", 3_000, 3_000, 1, {}, ME.tid, ME.name)])
    w.close()
    # The failed write is a gap too: the next write clears the sequence and says a packet was lost.
    lost = [p for p in decode(trace_path).packet if p.previous_packet_dropped]
    assert len(lost) == 1 and lost[0].sequence_flags & 1
    assert [e.name for e in read_trace(trace_path).events] == ["kept"]
    assert perfetto_import(trace_path).stats == {}


def test_big_counter_values_and_activity_tracks(trace_path: Path) -> None:
    tracebridge.start(output=trace_path)
    tracebridge.counter("big", (1 << 63) + 5)
    aid = tracebridge.activity_start("upload", track="Network")
    tracebridge.activity_end(aid)
    session = tracebridge.stop()
    events = {e.name: e for e in tracebridge.read(trace_path)}
    assert events["big"].value == float((1 << 63) + 5)
    assert events["upload"].track == "Network" and events["upload"].kind == "activity"
    assert session.stats.recorded == {"span": 0, "instant": 0, "counter": 1, "activity": 1, "log": 0}
