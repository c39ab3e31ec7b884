"""min_duration, the overhead budget (demotion), and capture_args."""

from __future__ import annotations

import asyncio
import inspect
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._recorder.runtime import now_ns
from tracebridge.analysis import render, summarize
from tracebridge.instrument import DEMOTE_AFTER, _budget, _wrap, instrument


class FakeClock:
    """The instrumented wrappers' clock in these tests: one microsecond a read, and ``pause(seconds)``
    for the sample's slow paths. A busy machine cannot make a quick call look slow. It starts well after
    any session these tests begin (a record from before its session's start is not written)."""

    def __init__(self) -> None:
        self.t = now_ns() + 10**12

    def __call__(self) -> int:
        self.t += 1_000
        return self.t

    def pause(self, seconds: float) -> None:
        self.t += int(seconds * 1e9)


@pytest.fixture
def timing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    (tmp_path / "timing_sample.py").write_text(
        textwrap.dedent(
            """
            import asyncio, time

            pause = time.sleep  # (the tests pass a fake clock's)

            def quick(x):
                return x + 1

            def sometimes_slow(slow):
                if slow:
                    pause(0.003)
                return slow

            def broken():
                raise LookupError("quick but failed")

            async def slow_io():
                pause(0.003)
                await asyncio.sleep(0)
                return "io"

            def login(user, password, *, retries=1):
                return {"user": user, "token": "t0ken"}
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import timing_sample

    clock = FakeClock()
    monkeypatch.setattr(_wrap, "now_ns", clock)
    timing_sample.pause = clock.pause
    yield timing_sample
    del sys.modules["timing_sample"]


def test_short_calls_are_left_out_and_failures_kept(timing: Any) -> None:
    handle = instrument("timing_sample", min_duration="1ms")
    try:
        tracebridge.start(level=2)
        assert [timing.sometimes_slow(s) for s in (False, True, False)] == [False, True, False]
        with pytest.raises(LookupError):
            timing.broken()
        assert asyncio.run(timing.slow_io()) == "io"
        assert inspect.iscoroutinefunction(timing.slow_io)
        events = tracebridge.stop().events
    finally:
        handle.uninstrument()
    assert [(e.name, e.error is not None) for e in events] == [
        ("timing_sample.sometimes_slow", False),
        ("timing_sample.broken", True),
        ("timing_sample.slow_io", False),
    ]
    assert events[0].end_ns - events[0].start_ns >= 1_000_000  # type: ignore[operator]
    assert events[0].metadata["code.function"] == "sometimes_slow"


def test_always_short_functions_are_demoted_until_the_next_session(timing: Any, tmp_path: Path) -> None:
    handle = instrument("timing_sample", min_duration="1ms")
    path = tmp_path / "demoted.perfetto-trace"
    try:
        tracebridge.start(level=2, output=path)
        for i in range(DEMOTE_AFTER + 10):
            assert timing.quick(i) == i + 1
        timing.sometimes_slow(True)
        session = tracebridge.stop()
        assert session.stats.demoted == {"timing_sample.quick": DEMOTE_AFTER}
        # The trace says so, and the summary shows it.
        trace = tracebridge.reading.read_trace(path)
        assert trace.stats.demoted == {"timing_sample.quick": DEMOTE_AFTER}
        assert "  timing_sample.quick (after 1000 calls)" in render(summarize(trace.events, trace.stats))
        tracebridge.start(level=2)  # a new session: demotions are undone
        for i in range(5):
            timing.quick(i)
        assert tracebridge.stop().stats.demoted == {}
    finally:
        handle.uninstrument()


def test_capture_args(timing: Any) -> None:
    handle = instrument("timing_sample", capture_args=True)
    try:
        tracebridge.start(level=2)
        items = [1, 2]
        timing.login("ann", "hunter2", retries=items)
        items.append(3)  # changed after the call: the span keeps what the call saw
        (ev,) = tracebridge.stop().events
    finally:
        handle.uninstrument()
    assert ev.metadata["args"] == {"user": "ann", "password": "[scrubbed]", "retries": [1, 2]}
    assert ev.metadata["return"] == {"user": "ann", "token": "[scrubbed]"}


def test_setup_errors() -> None:
    with pytest.raises(ValueError, match="min_duration"):
        instrument("x", min_duration="soon")


def test_a_new_instrument_call_undoes_demotions(timing: Any) -> None:
    handle = instrument("timing_sample", min_duration="1ms")
    try:
        tracebridge.start(level=2)
        for i in range(DEMOTE_AFTER + 1):
            timing.quick(i)
        assert "timing_sample.quick" in _budget.demotions
        other = instrument("json")  # any instrument() call starts a new generation
        other.uninstrument()
        assert _budget.demotions == {}
        timing.quick(1)
        tracebridge.stop()
    finally:
        handle.uninstrument()
