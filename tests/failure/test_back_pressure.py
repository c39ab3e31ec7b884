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
from tracebridge._recorder.runtime import RT
from tracebridge.reading import read_trace
from tracebridge.sinks.perfetto.writer import PerfettoWriter

from helpers import configured, official_view, perfetto_import

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


class FailingFile(PerfettoWriter):
    """A Perfetto file whose next ``fail`` writes fail as a full disk does (``-1``: every write)."""

    def __init__(self, path: Path, session: tracebridge.Session) -> None:
        super().__init__(path, start_ts=session.start_ns + session.clock_offset)
        self.fail = 0

    def write(self, thread: ThreadInfo, events: list[Any], loss: Loss | None = None) -> int:
        if self.fail:
            self.fail -= 1 if self.fail > 0 else 0
            raise OSError(28, "No space left on device")
        return super().write(thread, events, loss)


def failing_file(path: Path) -> tuple[list[FailingFile], Callable[[tracebridge.Session], FailingFile]]:
    """A sink factory for ``start(sink=...)``, and the list that will hold the file it makes."""
    made: list[FailingFile] = []

    def factory(session: tracebridge.Session) -> FailingFile:
        made.append(FailingFile(path, session))
        return made[0]

    return made, factory


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
    markers = [n for n in names if " events dropped (" in n]
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


def test_sink_errors_are_marked_when_the_file_takes_writes_again(trace_path: Path, lenient: None) -> None:
    made, factory = failing_file(trace_path)
    with configured(flush_interval=3600.0):
        session = tracebridge.start(level=2, output=trace_path, sink=factory)
        paced_loop(10, 100)
        tracebridge.flush()
        made[0].fail = -1
        paced_loop(10, 100)
        tracebridge.flush()
        made[0].fail = 0
        session._sink_retry_at = 0.0  # (no back-off wait in a test)
        paced_loop(10, 100)
        session = tracebridge.stop()
    assert session.stats.dropped == {"sink_error": {"span": 20}}
    imported = perfetto_import(trace_path)
    assert imported.stats == {}
    assert sum(n in SPAN_NAMES for n in imported.names()) == 40 == session.stats.recorded["span"]
    trace = read_trace(trace_path)
    assert [Loss.from_marker(m).dropped for m in trace.losses] == [{"sink_error": 20}]  # type: ignore[union-attr]


def test_records_the_writer_fails_to_convert_are_counted_and_marked(
    trace_path: Path, lenient: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk of records the writer took off a queue and could not convert (an internal error, such as
    the compiled step missing from a stale build) is counted as dropped, and its gap marked."""
    from tracebridge._recorder.session import Session

    events = Session._events
    calls = [0]

    def fails_once(self: Session, records: list[Any], info: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("conversion failed")
        return events(self, records, info)

    monkeypatch.setattr(Session, "_events", fails_once)
    with configured(flush_interval=3600.0):
        tracebridge.start(level=2, output=trace_path)
        paced_loop(10, 100)
        tracebridge.flush()
        paced_loop(10, 100)
        session = tracebridge.stop()
    assert session.stats.dropped == {"internal_error": {"span": 20}}
    assert session.stats.recorded["span"] == 20
    trace = read_trace(trace_path)
    assert [Loss.from_marker(m).dropped for m in trace.losses] == [{"internal_error": 20}]  # type: ignore[union-attr]
    assert perfetto_import(trace_path).stats == {}


def test_a_crowded_queue_lets_the_writer_run(trace_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past half full, a thread yields the interpreter lock every 64 records. Here the yield is a writer
    round (what the writer does when it gets the lock it waits for): a loop of 10,000 spans through a
    256-record queue then loses nothing; without the yield it would lose all but 256 of them."""
    from tracebridge._recorder import runtime

    yields = [0]

    def writer_runs() -> None:
        yields[0] += 1
        tracebridge.flush()

    monkeypatch.setattr(runtime, "_yield", writer_runs)
    runtime.thread_state().crowd = 0
    with configured(flush_interval=3600.0, thread_buffer=256):
        tracebridge.start(level=2, output=trace_path)
        for i in range(10_000):
            with tracebridge.span("tight", i=i) if i % 2 else tracebridge.span("plain"):
                pass
        session = tracebridge.stop()
    assert session.stats.dropped == {}
    assert session.stats.recorded["span"] == 10_000 == len(read_trace(trace_path).events)
    # The queue empties at each round, is crowded again 128 records later, and 64 after that yields.
    assert yields[0] == 10_000 // (128 + 64)


def test_a_busy_round_is_followed_by_the_next_at_once(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that found a full chunk queued on a thread does not sleep before the next one: what the
    thread recorded meanwhile is written without waiting for flush_interval (here an hour)."""
    from tracebridge._recorder import runtime
    from tracebridge._recorder.session import Session

    me = runtime.thread_state()
    rounds = Session._round
    calls = [0]

    def round_while_recording(self: Session, final: bool = False) -> None:
        rounds(self, final)
        calls[0] += 1
        if calls[0] == 1:  # the application records 10 more spans while the busy round runs
            t = runtime.now_ns()
            me.buf.extend(("meanwhile", 1, t + i, t + i + 1) for i in range(10))

    monkeypatch.setattr(Session, "_round", round_while_recording)
    with configured(flush_interval=3600.0, thread_buffer=100_000):
        session = tracebridge.start(level=2, output=trace_path)
        for _ in range(5000):
            with tracebridge.span("busy"):
                pass
        tracebridge.flush()  # the first round: 5,000 records queued, more than a chunk
        for _ in range(3000):  # (liveness, not timing: the hour-long wait would never end)
            if session.stats.recorded["span"] == 5010:
                break
            time.sleep(0.01)
        assert session.stats.recorded["span"] == 5010
        tracebridge.stop()


def test_a_crowded_queue_yields_every_64_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from tracebridge._recorder import runtime

    yields = [0]
    monkeypatch.setattr(runtime, "_yield", lambda: yields.__setitem__(0, yields[0] + 1))
    runtime.thread_state().crowd = 0
    with configured(flush_interval=3600.0, thread_buffer=256):
        session = tracebridge.start(level=2, output=None)
        for _ in range(1000):
            with tracebridge.span("tight"):
                pass
        stats = tracebridge.stop().stats
    # Records 129..1000 met a crowded queue (872 of them; those past 256 were dropped): 13 yields.
    assert yields[0] == 872 // 64 == 13
    assert stats.dropped == {"queue_full": {"span": 1000 - 256}} and session is not None


def test_a_crowded_queue_wakes_a_writer_that_sleeps_until_its_next_round(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A writer that waits for its next round (flush_interval, here an hour) is woken each time a
    crowded thread yields to it: else a loop that fills its queue before that round loses the rest.
    (The wake is counted here, not made, so that the queue stays crowded as in the test above.)"""
    from tracebridge._recorder.session import Session

    wakes = [0]
    monkeypatch.setattr(Session, "nudge", lambda self: wakes.__setitem__(0, wakes[0] + 1))
    from tracebridge._recorder import runtime

    runtime.thread_state().crowd = 0
    with configured(flush_interval=3600.0, thread_buffer=256):
        tracebridge.start(level=2, output=None)
        for _ in range(1000):
            with tracebridge.span("tight"):
                pass
        tracebridge.stop()
    assert wakes[0] == 872 // 64 == 13


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


def test_trace_lines_are_not_affected_by_a_file_that_fails(trace_path: Path, lenient: None) -> None:
    import logging

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    trace_logger = logging.getLogger("tracebridge.trace")
    trace_logger.addHandler(handler)
    level = trace_logger.level
    trace_logger.setLevel(logging.INFO)
    made, factory = failing_file(trace_path)
    try:
        with configured(log_lines=True):
            tracebridge.start(level=2, output=trace_path, sink=factory)
            made[0].fail = -1
            paced_loop(5, 100)
            session = tracebridge.stop()
    finally:
        trace_logger.removeHandler(handler)
        trace_logger.setLevel(level)
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
    # The child's trace is in the parent's file, a process of its own: the stats of both add up.
    assert not (tmp_path / "forked.perfetto-trace.children").exists()
    trace = read_trace(path)
    assert trace.problems == [] and trace.stats is not None
    imported = perfetto_import(path)
    assert imported.stats == {}
    spans = sum(n in SPAN_NAMES for n in imported.names())
    assert spans == trace.stats.recorded["span"] > 0
    assert trace.stats.dropped["queue_full"]["span"] > 0
    tracks = official_view(path)["tracks"].values()
    assert len({t.process.pid for t in tracks if t.HasField("process")}) == 2


def test_queued_memory_is_bounded_by_the_queue(trace_path: Path, writer_asleep: None) -> None:
    # A program measuring its own allocations with tracemalloc while it is traced: tracebridge's queue
    # holds at most thread_buffer records, however long the loop runs (the writer never runs here).
    import tracemalloc

    with configured(thread_buffer=1000, flush_interval=3600.0):
        tracebridge.start(level=2, output=trace_path)
        tight_loop(600)  # the queue is full
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tight_loop(20_000)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        session = tracebridge.stop()
    assert grown < 20_000  # bytes: drop counters, not 40,000 queued spans
    assert session.stats.recorded["span"] == 1000
    assert session.stats.dropped["queue_full"]["span"] == 1200 + 40_000 - 1000


# --------------------------------------------------- found by review: locks, signals, the last round


def run_script(code: str) -> str:
    """Run ``code`` in a child process (a hang there fails the test instead of hanging the suite)."""
    import subprocess
    import sys
    import textwrap

    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=JOIN
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_a_stall_is_reported_without_holding_a_lock_a_waiting_thread_needs(tmp_path: Path) -> None:
    # B waits for room while holding a MemoryHandler's lock (it flushes into our handler); A times out
    # and reports the stall on the logging system, which takes that lock: A must not hold anything B
    # needs to stop waiting.
    path = tmp_path / "t.perfetto-trace"
    out = run_script(f"""
        import logging, logging.handlers, threading, time, tracebridge
        from tracebridge.logging import PerfettoHandler
        from tracebridge.sinks.perfetto.writer import PerfettoWriter
        release = threading.Event()

        class Stuck:
            def __init__(self, inner):
                self.inner, self.drop_reason = inner, inner.drop_reason
            def write(self, thread, events, loss=None):
                release.wait(60)
                return self.inner.write(thread, events, loss)
            def flush(self):
                pass
            def close(self, *args):
                self.inner.close(*args)

        path = {str(path)!r}
        tracebridge.configure(on_full="block", thread_buffer=4, timeout=1.0, flush_interval=0.01)
        tracebridge.start(level=2, output=path, sink=lambda s: Stuck(PerfettoWriter(path)))
        memory = logging.handlers.MemoryHandler(capacity=1, target=PerfettoHandler(path))
        logging.getLogger().addHandler(memory)
        logging.getLogger().setLevel(logging.INFO)

        def spans():
            for i in range(50):
                with tracebridge.span("a"):
                    pass

        def logs():
            time.sleep(0.3)
            for i in range(50):
                logging.getLogger("app").warning("b %d", i)

        threads = [threading.Thread(target=spans), threading.Thread(target=logs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        print(sum(t.is_alive() for t in threads))
        release.set()
        s = tracebridge.stop()
        print(s.stats.total_recorded + s.stats.total_dropped)
    """)
    assert out.split() == ["0", "100"]


def test_a_span_ended_in_a_signal_handler_while_its_thread_waits_for_room(tmp_path: Path) -> None:
    out = run_script(f"""
        import signal, tracebridge
        def on_signal(signum, frame):
            with tracebridge.span("in-handler"):
                pass
        signal.signal(signal.SIGUSR1, on_signal)
        tracebridge.configure(on_full="block", thread_buffer=4, timeout=0.5, flush_interval=3600.0)
        s = tracebridge.start(level=2, output={str(tmp_path / "t.perfetto-trace")!r})
        fired = []
        def nudge():  # the thread waits for room (and the writer never comes): a signal arrives
            if not fired:
                fired.append(1)
                signal.raise_signal(signal.SIGUSR1)
        s.nudge = nudge
        for i in range(20):
            with tracebridge.span("main"):
                pass
        s = tracebridge.stop()
        print(s.stats.recorded["span"], s.stats.dropped)
    """)
    assert out.strip() == "4 {'queue_full': {'span': 1}, 'writer_stalled': {'span': 16}}"


def test_stop_in_block_mode_writes_what_ends_while_it_stops(trace_path: Path) -> None:
    from tracebridge import _recorder

    release = _recorder.Session._release_waiters
    go, ended = threading.Event(), threading.Event()

    def release_then_let_a_span_end(self: _recorder.Session) -> None:
        release(self)
        time.sleep(0.05)  # (time for a writer that took "stopping" for its signal to end: it must not)
        go.set()  # stop() is under way: the span ends now, before the writer's last round
        ended.wait(JOIN)

    def late() -> None:
        with tracebridge.span("ends-during-stop"):
            started.set()
            go.wait(JOIN)
        ended.set()

    started = threading.Event()
    with configured(on_full="block", thread_buffer=8, flush_interval=0.01):
        session = tracebridge.start(level=2, output=trace_path)
        session._release_waiters = release_then_let_a_span_end.__get__(session)  # type: ignore[method-assign]
        for _ in range(5):
            with tracebridge.span("before"):
                pass
        t = threading.Thread(target=late)
        t.start()
        assert started.wait(JOIN)
        session = tracebridge.stop()
        t.join(JOIN)
    assert session.stats.dropped == {}
    assert session.stats.recorded["span"] == 6
    assert sorted(e.name for e in read_trace(trace_path).events) == ["before"] * 5 + ["ends-during-stop"]


def test_the_last_round_retries_the_file_and_marks_every_gap(trace_path: Path, lenient: None) -> None:
    made, factory = failing_file(trace_path)
    with configured(flush_interval=3600.0):
        tracebridge.start(level=2, output=trace_path, sink=factory)
        paced_loop(5, 100)
        tracebridge.flush()
        made[0].fail = 1
        paced_loop(5, 100)
        tracebridge.flush()  # fails: the session backs off for a second
        with tracebridge.span("last"):
            pass
        session = tracebridge.stop()  # within the back-off: the last round tries anyway
    assert session.stats.dropped == {"sink_error": {"span": 10}}
    trace = read_trace(trace_path)
    assert [Loss.from_marker(m).dropped for m in trace.losses] == [{"sink_error": 10}]  # type: ignore[union-attr]
    assert [e.name for e in trace.events].count("last") == 1
    assert perfetto_import(trace_path).stats == {}


def test_a_gap_the_file_never_marked_is_marked_when_it_closes(trace_path: Path, lenient: None) -> None:
    made, factory = failing_file(trace_path)
    with configured(flush_interval=3600.0):
        tracebridge.start(level=2, output=trace_path, sink=factory)
        made[0].fail = 1
        paced_loop(5, 100)
        session = tracebridge.stop()  # the last round's write fails; nothing more comes
    trace = read_trace(trace_path)
    assert session.stats.dropped == {"sink_error": {"span": 10}}
    assert [Loss.from_marker(m).dropped for m in trace.losses] == [{"sink_error": 10}]  # type: ignore[union-attr]


def test_block_with_trace_lines_into_a_perfetto_handler_never_stalls(trace_path: Path) -> None:
    # The writer logs trace lines; they reach the root logger's PerfettoHandler, whose emit a waiting
    # application thread is inside of: had it taken the handler's lock, the writer would wait for it
    # until the timeout (a stall, and drops).
    import logging

    from tracebridge.logging import PerfettoHandler

    root = logging.getLogger()
    level = root.level
    with configured(on_full="block", thread_buffer=8, timeout=30.0, log_lines=True):
        handler = PerfettoHandler(trace_path)
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            log = logging.getLogger("app")

            def work() -> None:
                for i in range(300):
                    with tracebridge.span("outer", level=2):
                        log.info("step %d", i)

            run_threads(work, 2)
            session = tracebridge.stop()
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
    assert session.stats.dropped == {}
    assert session.stats.recorded["span"] == 600 and session.stats.recorded["log"] == 600


def test_threads_blocked_when_stop_begins_lose_nothing(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Eight threads wait for room (the writer is stuck) when stop() begins. A waiter woken by stop() is
    # delayed before it queues its record (here: nudging the writer takes 20 ms once stopping): the
    # writer's last round must still take that record.
    from tracebridge import _recorder

    nudge = _recorder.Session.nudge

    def slow_nudge(self: _recorder.Session) -> None:
        if self._stopping:
            time.sleep(0.02)
        nudge(self)

    monkeypatch.setattr(_recorder.Session, "nudge", slow_nudge)
    holder, factory = gated(trace_path)
    with configured(thread_buffer=4, on_full="block", timeout=30.0, flush_interval=0.01):
        tracebridge.start(level=2, output=trace_path, sink=factory)
        session = RT.session
        assert session is not None
        tight_loop(1)
        assert holder[0].entered.wait(JOIN)  # the writer is stuck from now on
        counts = [0] * 8

        def produce(k: int) -> None:
            for _ in range(20):
                with tracebridge.span("s", level=2) as s:
                    pass
                counts[k] += isinstance(s, tracebridge.Span)

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + JOIN
        while session._waiting < 8 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert session._waiting == 8
        release = session._release_waiters

        def release_then_unstick() -> None:
            release()
            holder[0].open.set()  # the writer goes on to its last round at once

        session._release_waiters = release_then_unstick  # type: ignore[method-assign]
        stopper = threading.Thread(target=tracebridge.stop)
        stopper.start()
        for t in threads:
            t.join(JOIN)
        stopper.join(JOIN)
        assert not stopper.is_alive() and not any(t.is_alive() for t in threads)
    st = session.stats
    assert sum(counts) == 8 * 5  # four queued and one waiting each, when recording stopped
    assert st.recorded["span"] + st.total_dropped == 2 + sum(counts)
    assert st.total_dropped == 0
