"""tracebridge.testing and the pytest plugin: what users test their own instrumentation with."""

from __future__ import annotations

import logging
import threading

import pytest

import tracebridge
from tracebridge.sampling import AlwaysOff
from tracebridge.testing import capture


def checkout(fail: bool = False) -> None:
    with tracebridge.span("checkout", cart=3):
        logging.getLogger("shop").warning("reserving %d items", 3)
        with tracebridge.span("reserve_stock", level=2):
            tracebridge.instant("row", level=2, sku="A1")
        with tracebridge.span("charge", level=2, amount=12):
            if fail:
                raise ValueError("card declined")
        with tracebridge.span("verbose detail", level=4):
            pass


def test_outline_and_lookups() -> None:
    with capture() as trace, pytest.raises(ValueError):
        checkout(fail=True)
    # The exception went through checkout too: both failed.
    assert trace.outline() == "checkout [ValueError]\n  reserve_stock\n  charge [ValueError]\n"
    assert trace.outline(("span", "instant", "log"), metadata=True) == (
        "checkout [ValueError] {cart=3}\n"
        "  reserving 3 items {logger=shop, message_template=reserving %d items}\n"
        "  reserve_stock\n"
        "    row {sku=A1}\n"
        "  charge [ValueError] {amount=12}\n"
    )
    (root,) = trace.spans("checkout")
    assert [e.name for e in trace.children(root)] == ["reserving 3 items", "reserve_stock", "charge"]
    assert [e.name for e in trace.failed()] == ["checkout", "charge"]
    assert {e.error.message for e in trace.failed() if e.error} == {"card declined"}
    (log,) = trace.logs("reserving 3 items")
    assert log.metadata["logger"] == "shop" and log.span_id == root.span_id
    assert [e.metadata for e in trace.instants("row")] == [{"sku": "A1"}]
    assert [e.start_ns for e in trace.events] == sorted(e.start_ns for e in trace.events)
    assert {k: n for k, n in trace.stats.recorded.items() if n} == {"span": 3, "instant": 1, "log": 1}
    assert "stopped: 5 events" in repr(trace)


def test_children_of_what_is_not_a_span() -> None:
    with capture() as trace, tracebridge.span("outer"):
        tracebridge.instant("first")
        tracebridge.instant("second")
    first, _ = trace.instants()
    assert trace.children(first) == []
    assert [e.name for e in trace.children(trace.spans("outer")[0])] == ["first", "second"]


def test_the_code_under_test_may_stop_the_recording() -> None:
    # The capture ends there; the test's own exception is the one it sees.
    with pytest.raises(ValueError, match="real"), capture() as trace:
        with tracebridge.span("before"):
            pass
        tracebridge.stop()
        raise ValueError("real")
    assert trace.outline() == "before\n"
    # A recording the code under test started after that is its own: the capture leaves it running.
    with capture():
        tracebridge.stop()
        tracebridge.start()
    assert tracebridge.stop().stopped


def test_events_can_be_read_while_recording() -> None:
    with capture() as trace, tracebridge.span("outer"):
        with tracebridge.span("done"):
            pass
        # The ended span is there; the open one is not yet.
        assert [e.name for e in trace.spans()] == ["done"]
        assert "recording" in repr(trace)
    assert trace.outline() == "outer\n  done\n"


def test_spans_of_other_threads_are_roots_of_their_own() -> None:
    def worker() -> None:
        with tracebridge.span("job"):
            pass

    with capture() as trace, tracebridge.span("main"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert sorted(trace.outline().splitlines()) == ["job", "main"]


def test_configured_sampling_is_set_aside_unless_given() -> None:
    tracebridge.configure(sampling=AlwaysOff())
    try:
        with capture() as everything:
            checkout()
        with capture(sampling=AlwaysOff()) as sampled:
            checkout()
    finally:
        tracebridge.configure(sampling=None)
    assert len(everything.spans()) == 3
    # Level 1 (critical) spans are kept whatever sampling says; the rest went.
    assert sampled.outline() == "checkout\n"
    assert sampled.stats.dropped["sampled_out"]["span"] == 2


def test_the_root_logger_is_left_as_it_was() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    with pytest.raises(KeyError), capture():
        assert len(root.handlers) == len(before) + 1
        raise KeyError("boom")
    assert root.handlers == before
    with capture(logs=False) as quiet:
        assert root.handlers == before
        checkout()
    assert quiet.logs() == [] and len(quiet.spans()) == 3


def test_capture_inside_a_recording_raises_at_once() -> None:
    before = list(logging.getLogger().handlers)
    tracebridge.start()
    try:
        with pytest.raises(RuntimeError, match="already active"), capture():
            pass
    finally:
        tracebridge.stop()
    assert logging.getLogger().handlers == before


def test_pytest_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import tracebridge

        def test_traced(tracebridge_capture):
            with tracebridge.span("load", path="app.toml"):
                pass
            (load,) = tracebridge_capture.spans("load")
            assert load.metadata == {"path": "app.toml"}

        def test_not_leaked():
            from tracebridge._recorder.runtime import RT
            assert RT.session is None
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
