"""Many threads at once: every emitted event is written or counted as dropped, by reason."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._recorder.runtime import RT
from tracebridge.reading import read_trace

THREADS = 8
SPANS = 10_000


def hammer(barrier: threading.Barrier) -> None:
    barrier.wait()
    for i in range(SPANS):
        with tracebridge.span("op", i=i):
            pass


@pytest.mark.parametrize("thread_buffer", [65536, 256])
def test_eight_threads_account_for_every_span(trace_path: Path, thread_buffer: int) -> None:
    tracebridge.configure(thread_buffer=thread_buffer)
    try:
        tracebridge.start(output=trace_path)
        barrier = threading.Barrier(THREADS)
        threads = [threading.Thread(target=hammer, args=(barrier,)) for _ in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
            assert not t.is_alive()
        session = tracebridge.stop()
    finally:
        tracebridge.configure(thread_buffer=65536)
    trace = read_trace(trace_path)
    assert trace.problems == []
    written = sum(1 for e in trace.events if e.name == "op")
    dropped = session.stats.dropped.get("queue_full", {}).get("span", 0)
    assert written == session.stats.recorded["span"]
    assert written + dropped == THREADS * SPANS
    assert set(session.stats.dropped) <= {"queue_full"}
    assert len({e.thread_id for e in trace.events}) == THREADS
    if thread_buffer == 256:
        assert dropped > 0
        assert trace.stats is not None and trace.stats.dropped == session.stats.dropped


def test_stop_deadline_drops_what_it_cannot_write(trace_path: Path) -> None:
    tracebridge.configure(thread_buffer=400_000, flush_interval=1000)
    try:
        tracebridge.start(output=trace_path)
        for i in range(200_000):
            with tracebridge.span("op", i=i):
                pass
        session = tracebridge.stop(timeout=0.05)
    finally:
        tracebridge.configure(thread_buffer=65536, flush_interval=0.1)
    late = session.stats.dropped.get("stop_timeout", {}).get("span", 0)
    assert late > 0
    assert session.stats.recorded["span"] + late == 200_000
    trace = read_trace(trace_path)
    assert trace.problems == []
    assert len(trace.events) == session.stats.recorded["span"]
    assert trace.stats is not None and trace.stats.dropped["stop_timeout"] == {"span": late}


def test_stop_says_when_it_gave_up_on_a_stuck_writer(trace_path: Path, lenient: None) -> None:
    from tracebridge.sinks.perfetto.writer import PerfettoWriter

    release = threading.Event()

    class Stuck(PerfettoWriter):
        def write(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            release.wait(60)
            return super().write(*args, **kwargs)

    tracebridge.start(output=trace_path, sink=lambda s: Stuck(trace_path))
    with tracebridge.span("op"):
        pass
    session = tracebridge.stop(timeout=0.1)
    assert session.timed_out  # its stats are not final, and it says so
    release.set()
    assert session._writer is not None
    session._writer.join(30)
    assert not session._writer.is_alive()
    trace = read_trace(trace_path)  # the writer closed the trace when it finished
    assert trace.stats == session.stats and [e.name for e in trace.events] == ["op"]


def test_stop_deadline_with_queue_full_drops_finishes(
    trace_path: Path, lenient: None, writer_asleep: None
) -> None:
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
