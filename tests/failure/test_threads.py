"""Many threads at once: every emitted event is written or counted as dropped, by reason."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import tracebridge
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
