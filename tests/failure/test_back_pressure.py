"""Producers faster than the writer: a loss never hides what follows it, and on_full="block" loses
nothing without ever hanging the application.

Losses are made deterministic by pacing: the writer's own rounds are an hour apart, so it writes only
when a test thread calls ``flush()``, and a thread's queue of 16 records overflows between two flushes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._model import Loss, ThreadInfo
from tracebridge._runtime import RT
from tracebridge.reading import read_trace

from helpers import configured, perfetto_import

JOIN = 60  # seconds a test waits for a thread before it calls it a hang
SPAN_NAMES = {"outer", "inner0", "inner1", "inner2"}


def paced_loop(iterations: int, flush_every: int) -> None:
    for i in range(iterations):
        with tracebridge.span("outer", i=i, key=f"k{i % 3}"), tracebridge.span(f"inner{i % 3}", level=2):
            pass
        if i % flush_every == flush_every - 1:
            tracebridge.flush()


def run_threads(target: Callable[[], None], n: int) -> None:
    threads = [threading.Thread(target=target, name=f"worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN)
    assert not any(t.is_alive() for t in threads), "a thread hung"


@pytest.mark.parametrize("threads", [1, 8])
def test_every_recorded_span_is_a_slice_after_losses(trace_path: Path, threads: int) -> None:
    with configured(thread_buffer=16, flush_interval=3600.0):
        tracebridge.start(level=2, output=trace_path)
        run_threads(lambda: paced_loop(600, 40), threads)
        session = tracebridge.stop()
    spans = session.stats.recorded["span"]
    lost = session.stats.dropped.get("queue_full", {}).get("span", 0)
    assert spans + lost == threads * 600 * 2
    assert lost > 0 and spans > 0

    imported = perfetto_import(trace_path)
    assert imported.stats == {}  # nothing skipped, no interned name missing, no misplaced END
    names = imported.names()
    assert sum(n in SPAN_NAMES for n in names) == spans
    assert all(dur is not None for n, _, _, dur in imported.slices if n in SPAN_NAMES)
    markers = [n for n in names if n.startswith("tracebridge: ")]
    assert markers and imported.loss_packets == len(markers)  # each gap: reported, cleared, marked

    trace = read_trace(trace_path)
    assert trace.problems == []
    assert sum(e.kind == "span" for e in trace.events) == spans
    assert sum(Loss.from_marker(m).total for m in trace.losses) == lost  # type: ignore[union-attr]
    assert {m.thread_name for m in trace.losses} <= {f"worker-{i}" for i in range(threads)}


def test_chrome_json_after_losses(tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    with configured(thread_buffer=16, flush_interval=3600.0):
        tracebridge.start(level=2, output=path)
        run_threads(lambda: paced_loop(300, 40), 4)
        session = tracebridge.stop()
    trace = read_trace(path)
    assert trace.problems == []
    spans = [e for e in trace.events if e.kind == "span"]
    assert len(spans) == session.stats.recorded["span"]
    lost = session.stats.dropped["queue_full"]["span"]
    assert sum(Loss.from_marker(m).total for m in trace.losses) == lost  # type: ignore[union-attr]
    # Complete events only: a gap cannot leave a begin without its end.
    import json

    phases = {e["ph"] for e in json.loads(path.read_text())["traceEvents"]}
    assert phases <= {"X", "i", "M"}


def test_sink_errors_are_marked_when_the_file_takes_writes_again(trace_path: Path) -> None:
    from tracebridge.sinks.perfetto.writer import PerfettoWriter

    failing = threading.Event()

    class Flaky(PerfettoWriter):
        def write(self, thread: ThreadInfo, events: list[Any], loss: Loss | None = None) -> int:
            if failing.is_set():
                raise OSError(28, "No space left on device")
            return super().write(thread, events, loss)

    def sink(session: tracebridge.Session) -> PerfettoWriter:
        return Flaky(trace_path, start_ts=session.start_ns + session.clock_offset)

    with configured(flush_interval=3600.0, strict=False):
        session = tracebridge.start(level=2, output=trace_path, sink=sink)
        paced_loop(10, 100)
        tracebridge.flush()
        failing.set()
        paced_loop(10, 100)
        tracebridge.flush()
        failing.clear()
        session._sink_retry_at = 0.0  # (no back-off wait in a test)
        paced_loop(10, 100)
        session = tracebridge.stop()
    from tracebridge import _safety

    _safety._pending.clear()
    assert session.stats.dropped == {"sink_error": {"span": 20}}
    imported = perfetto_import(trace_path)
    assert imported.stats == {}
    assert sum(n in SPAN_NAMES for n in imported.names()) == 40 == session.stats.recorded["span"]
    trace = read_trace(trace_path)
    assert [Loss.from_marker(m).dropped for m in trace.losses] == [{"sink_error": 20}]  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------- on_full="block"


def tight_loop(iterations: int) -> None:
    for i in range(iterations):
        with tracebridge.span("outer", i=i), tracebridge.span(f"inner{i % 3}", level=2):
            pass


def test_block_loses_nothing_on_eight_threads(trace_path: Path) -> None:
    with configured(thread_buffer=64, on_full="block"):
        tracebridge.start(level=2, output=trace_path)
        run_threads(lambda: tight_loop(3000), 8)
        session = tracebridge.stop()
    assert session.stats.dropped == {}
    assert session.stats.recorded["span"] == 8 * 3000 * 2
    imported = perfetto_import(trace_path)
    assert imported.stats == {} and imported.loss_packets == 0
    assert sum(n in SPAN_NAMES for n in imported.names()) == 8 * 3000 * 2


class Gate:
    """A sink wrapper whose writes wait until the test opens the gate: a writer that is stuck."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.drop_reason = inner.drop_reason
        self.open = threading.Event()
        self.entered = threading.Event()

    def write(self, thread: ThreadInfo, events: list[Any], loss: Loss | None = None) -> int:
        self.entered.set()
        self.open.wait(JOIN)
        return int(self.inner.write(thread, events, loss))

    def flush(self) -> None:
        self.inner.flush()

    def close(self, *args: Any) -> None:
        self.inner.close(*args)


def gated(path: Path) -> tuple[Gate, Callable[[tracebridge.Session], Any]]:
    from tracebridge.sinks.perfetto.writer import PerfettoWriter

    holder: list[Gate] = []

    def factory(session: tracebridge.Session) -> Gate:
        gate = Gate(PerfettoWriter(path, start_ts=session.start_ns + session.clock_offset))
        holder.append(gate)
        return gate

    return holder, factory  # type: ignore[return-value]


def test_block_falls_back_to_dropping_when_the_writer_is_stuck(trace_path: Path) -> None:
    holder, factory = gated(trace_path)
    with configured(thread_buffer=32, on_full="block", timeout=0.3, flush_interval=0.01, strict=False):
        tracebridge.start(level=2, output=trace_path, sink=factory)
        gate = holder[0]
        tight_loop(10)  # the writer takes these and gets stuck writing them
        assert gate.entered.wait(JOIN)
        done = threading.Event()

        def producer() -> None:
            tight_loop(500)
            done.set()

        run_threads(producer, 2)  # would hang here if a full queue waited for ever
        assert done.is_set()
        gate.open.set()
        session = tracebridge.stop()
    from tracebridge import _safety

    _safety._pending.clear()
    emitted = 10 * 2 + 2 * 500 * 2
    assert session.stats.recorded["span"] + session.stats.total_dropped == emitted
    assert session.stats.dropped["writer_stalled"]["span"] > 0
    assert set(session.stats.dropped) == {"writer_stalled"}
    imported = perfetto_import(trace_path)
    assert imported.stats == {}
    assert sum(n in SPAN_NAMES for n in imported.names()) == session.stats.recorded["span"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # (the kill)
def test_block_with_a_dead_writer_drops_at_once_and_stop_counts_the_rest(trace_path: Path) -> None:
    with configured(thread_buffer=32, on_full="block", timeout=30.0, flush_interval=3600.0, strict=False):
        session = tracebridge.start(level=2, output=trace_path)

        def die(final: bool = False) -> None:
            raise SystemExit("writer killed")  # what no except Exception catches

        session._round = die  # type: ignore[method-assign]
        session.nudge()
        assert session._writer is not None
        session._writer.join(JOIN)
        assert not session._writer.is_alive()
        started = time.monotonic()
        tight_loop(200)  # a 30 s timeout per full queue would show here
        assert time.monotonic() - started < 25
        session = tracebridge.stop()
    from tracebridge import _safety

    _safety._pending.clear()
    st = session.stats
    assert st.recorded["span"] == 0
    assert st.dropped["writer_stalled"]["span"] == 400
    assert read_trace(trace_path).stats == st


def test_stop_releases_threads_blocked_on_a_full_queue(trace_path: Path) -> None:
    holder, factory = gated(trace_path)
    with configured(thread_buffer=8, on_full="block", timeout=30.0, flush_interval=0.01):
        tracebridge.start(level=2, output=trace_path, sink=factory)
        gate = holder[0]
        tight_loop(4)
        assert gate.entered.wait(JOIN)
        blocked = threading.Event()
        recording = [0]  # spans begun while the session recorded (after stop() began, none are)

        def producer() -> None:
            for i in range(50):
                with tracebridge.span("outer", i=i) as s:
                    recording[0] += isinstance(s, tracebridge.Span)
            blocked.set()

        t = threading.Thread(target=producer)
        t.start()
        deadline = time.monotonic() + JOIN
        session = RT.session
        assert session is not None
        while session._waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert session._waiting == 1  # the producer waits for room
        stopper = threading.Thread(target=tracebridge.stop)
        stopper.start()
        t.join(JOIN)  # stop() released it
        assert not t.is_alive() and blocked.is_set()
        gate.open.set()
        stopper.join(JOIN)
        assert not stopper.is_alive()
    st = session.stats
    assert recording[0] > 8  # it filled its queue and waited
    assert st.recorded["span"] + st.total_dropped == 4 * 2 + recording[0]
    assert st.total_dropped == 0


def test_trace_lines_are_not_affected_by_a_file_that_fails(trace_path: Path) -> None:
    import logging

    from tracebridge import _safety
    from tracebridge.sinks.perfetto.writer import PerfettoWriter

    class Full(PerfettoWriter):
        def write(self, thread: ThreadInfo, events: list[Any], loss: Loss | None = None) -> int:
            raise OSError(28, "No space left on device")

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    trace_logger = logging.getLogger("tracebridge.trace")
    trace_logger.addHandler(handler)
    level = trace_logger.level
    trace_logger.setLevel(logging.INFO)
    try:
        with configured(strict=False, log_lines=True):
            tracebridge.start(level=2, output=trace_path, sink=lambda s: Full(trace_path))
            paced_loop(5, 100)
            session = tracebridge.stop()
    finally:
        trace_logger.removeHandler(handler)
        trace_logger.setLevel(level)
        _safety._pending.clear()
    assert session.stats.dropped == {"sink_error": {"span": 10}}
    assert sum(line.startswith("[TRACE] outer") for line in lines) == 5
    assert sum(line.startswith("[TRACE] inner") for line in lines) == 5


def test_losses_around_a_fork_hide_nothing_in_either_trace(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "forked.perfetto-trace"
    code = f"""
        import os, tracebridge
        tracebridge.configure(thread_buffer=16, flush_interval=3600.0)
        tracebridge.start(level=2, output={str(path)!r})

        def loop(n):
            for i in range(n):
                with tracebridge.span("outer", i=i), tracebridge.span("inner0", level=2):
                    pass
                if i % 40 == 39:
                    tracebridge.flush()

        loop(100)
        for i in range(30):  # queued, not yet written, when the process forks
            with tracebridge.span("outer"):
                pass
        pid = os.fork()
        loop(100)
        tracebridge.stop()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=JOIN
    )
    assert out.returncode == 0, out.stderr
    child = tmp_path / f"forked.{out.stdout.strip()}.perfetto-trace"
    for trace_file in (path, child):
        trace = read_trace(trace_file)
        assert trace.problems == [] and trace.stats is not None
        imported = perfetto_import(trace_file)
        assert imported.stats == {}
        spans = sum(n in SPAN_NAMES for n in imported.names())
        assert spans == trace.stats.recorded["span"] > 0
        assert trace.stats.dropped["queue_full"]["span"] > 0
