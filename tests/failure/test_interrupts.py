"""An interrupt at any point of a span's enter and exit (issue 14). Python runs a signal handler (which
may raise KeyboardInterrupt) as a function begins and as a call returns to its caller; a profile function
raises there instead, at each such point of a ``with`` over two spans in turn, and the current span and
the thread's stack must then be as they were before the ``with``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import tracebridge
from tracebridge._recorder.runtime import thread_state
from tracebridge.spans import set_clock

where: list[Any] = []
#: Where the interrupts land: tracebridge's code, and this module's workloads.
OURS = (os.path.dirname(tracebridge.__file__), __file__)


def interrupted_at(k: int, fn: Callable[[], None]) -> bool:
    """Run ``fn`` raising KeyboardInterrupt as the ``k``-th call (of Python or C code) under it returns;
    True if it was interrupted."""
    seen = 0
    me = sys._getframe()

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal seen
        if not frame.f_code.co_filename.startswith(OURS):
            return  # (other code that runs meanwhile: a weakref callback, the garbage collector)
        if frame is me or (frame.f_back is me and event != "c_return"):
            return  # (the driver's own calls: before and after the spans, not inside them)
        if event == "return" and frame.f_code.co_name == "__enter__":
            return  # (``with`` takes what __enter__ returns without running signal handlers first)
        if event == "call" and frame.f_code.co_name == "__exit__" and not tracebridge.accelerated:
            # The one place left on the pure-Python path: as ``__exit__`` begins, before it can do
            # anything (the compiled ``__exit__`` is one C call, where no handler runs).
            return
        if event in ("call", "return", "c_return"):
            seen += 1
            if seen == k:
                where.append((event, frame.f_code.co_name, getattr(arg, "__name__", None)))
                raise KeyboardInterrupt

    sys.setprofile(profile)
    try:
        fn()
    except KeyboardInterrupt:
        return True
    finally:
        sys.setprofile(None)
    return False


@tracebridge.traced
def decorated() -> None:
    pass


def nested() -> None:
    with tracebridge.span("outer", level=1), tracebridge.span("inner", level=1, n=1):
        decorated()
        with tracebridge.span("on a track", level=1, track="jobs"):
            pass


@pytest.fixture(params=["real clock", "clock in Python"])
def clock(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.param == "clock in Python":  # (the compiled path calls back into Python for it)
        set_clock(lambda: time.perf_counter_ns())
    try:
        yield
    finally:
        set_clock(None)


@pytest.mark.parametrize("sampling", [None, tracebridge.sampling.TraceIdRatio(0.0)], ids=["kept", "dropped"])
def test_an_interrupt_anywhere_in_enter_and_exit_leaves_the_current_span_right(
    clock: None, sampling: Any
) -> None:
    workload = nested
    session = tracebridge.start(level=2, sampling=sampling)
    interrupts = 0
    try:
        for k in range(1, 1000):
            if not interrupted_at(k, workload):
                break
            interrupts += 1
            assert tracebridge.current_span() is None, (k, where[-1])
            assert thread_state().stack == [], (k, where[-1])
        else:
            pytest.fail("the profile function interrupted every run")
        workload()  # and spans go on as before
    finally:
        tracebridge.stop()
    assert interrupts >= 10
    if sampling is None:
        assert [e.name for e in session.events][-4:] == ["outer", "inner", "decorated", "on a track"]


def test_an_interrupt_in_an_exit_out_of_order_leaves_the_stack_right(clock: None) -> None:
    # ``a`` ends while ``b``, begun after it on the same thread, is still open (as asyncio tasks do): it
    # leaves the thread's stack for a track of its own, whatever point an interrupt comes at.
    tracebridge.start(level=2)
    try:
        for k in range(1, 200):
            a, b = tracebridge.span("a", level=1), tracebridge.span("b", level=1)
            a.__enter__()
            b.__enter__()
            hit = interrupted_at(k, lambda: a.__exit__(None, None, None))  # noqa: B023
            assert thread_state().stack == [b], (k, where[-1] if hit else None)
            b.__exit__(None, None, None)
            assert thread_state().stack == []
            if not hit:
                break
        else:
            pytest.fail("the profile function interrupted every run")
    finally:
        tracebridge.stop()
    assert k > 3
