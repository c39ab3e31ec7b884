from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

import tracebridge
from tracebridge.sampling import ParentBased, TraceIdRatio
from tracebridge.structlog import (
    PerfettoProcessor,
    RateLimitProcessor,
    SamplingProcessor,
    TraceLineRenderer,
    add_trace_context,
)


@pytest.fixture
def configure() -> Iterator[object]:
    yield structlog.configure
    structlog.reset_defaults()


def test_processors_end_to_end(trace_path: Path, configure, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    configure(
        processors=[add_trace_context, PerfettoProcessor(trace_path), TraceLineRenderer()],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    log = structlog.get_logger()
    log.info("hello", user="ann")
    with tracebridge.span("request", level=2) as s:
        log.warning("inside")
        try:
            {}["missing"]
        except KeyError:
            log.exception("lookup failed")
    tracebridge.stop()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[INFO] hello {user=ann}"
    assert out[1] == f"[WARNING] inside {{trace_id={s.trace_id:032x}, span_id={s.span_id:016x}}}"
    assert out[-1] == "KeyError: 'missing'" and "test_processors_end_to_end" in out[-2]
    logs = [e for e in tracebridge.read(trace_path) if e.kind == "log"]
    assert [(e.name, e.value) for e in logs] == [("hello", 4), ("inside", 5), ("lookup failed", 6)]
    assert logs[0].metadata == {"user": "ann"}
    assert logs[0].source is not None and logs[0].source.file == __file__
    assert logs[2].error is not None and logs[2].error.type == "KeyError"


def test_sampling_and_rate_limiting_drop_events(configure, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    limiter = RateLimitProcessor(1000.0, burst=2)
    frozen = time.monotonic()
    limiter._limiter._clock = lambda: frozen  # (an injected clock: a loaded machine refills nothing)
    sampler = SamplingProcessor(probability=0.0)
    configure(
        processors=[sampler, limiter, TraceLineRenderer()], logger_factory=structlog.PrintLoggerFactory()
    )
    log = structlog.get_logger()
    tracebridge.start(sampling=ParentBased(TraceIdRatio(0.5)))
    try:
        kept = 0
        for _ in range(100):
            with tracebridge.span("r", level=2) as s:
                log.info("in trace")
                kept += s.sampled
        log.info("outside")  # probability 0
        for _ in range(5):
            log.error("flood")
        limiter._limiter._clock = lambda: frozen + 1.0
        log.error("flood")
    finally:
        tracebridge.stop()
    lines = capsys.readouterr().out.splitlines()
    # The in-trace events share the limiter's "in trace" key: at most two pass it.
    assert lines.count("[INFO] in trace") == min(kept, 2)
    assert lines[-3:] == ["[ERROR] flood", "[ERROR] flood", "[ERROR] flood {suppressed=3}"]
    assert sampler.dropped == 100 - kept + 1


def test_trace_lines_through_processor_formatter(caplog: pytest.LogCaptureFixture) -> None:
    handler = logging.StreamHandler()
    formatter = structlog.stdlib.ProcessorFormatter(processors=[TraceLineRenderer(include_thread=True)])
    handler.setFormatter(formatter)
    tracebridge.configure(log_lines=True)
    try:
        with caplog.at_level(logging.INFO, logger="tracebridge.trace"):
            with tracebridge.span("op", level=2, k=1):
                pass
            tracebridge.flush()
    finally:
        tracebridge.configure(log_lines=None)
    (record,) = caplog.records
    text = formatter.format(record)
    assert text.startswith("[TRACE] op (") and text.endswith("{k=1} [MainThread:" + f"{record.thread}]")


def test_sampling_processor_setup_errors() -> None:
    with pytest.raises(ValueError, match=r"SamplingProcessor\(keep_level\)"):
        SamplingProcessor(keep_level="loud")
    with pytest.raises(ValueError, match=r"SamplingProcessor\(probability\)"):
        SamplingProcessor(probability=2)
    assert SamplingProcessor(keep_level="error").keep_level == logging.ERROR


def test_rendered_lines_are_scrubbed_as_the_trace_is() -> None:
    line = TraceLineRenderer()(
        None, "info", {"event": "hello", "user": "bob", "password": "pw", "cfg": {"token": "t"}}
    )
    assert line == "[INFO] hello {user=bob, password=[scrubbed], cfg={'token': '[scrubbed]'}}"


def test_positional_arguments_name_the_slice_after_the_format_string(trace_path: Path, configure) -> None:  # type: ignore[no-untyped-def]
    """``log.info("order %d", n)``: with the processor before structlog's PositionalArgumentsFormatter, the
    message is formatted as that formatter would, and the slice is named after the format string (as a
    stdlib record's); after it, the event is the message."""
    from tracebridge.structlog import _positional

    from helpers import perfetto_import

    configure(
        processors=[PerfettoProcessor(trace_path), structlog.stdlib.PositionalArgumentsFormatter()],
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    log = structlog.get_logger("shop")
    for i in range(3):
        log.info("order %d loaded from %s", i, "db")
    log.info("%(n)s items", {"n": 4})
    with contextlib.suppress(TypeError):  # (structlog's own formatter, after ours, raises)
        log.info("%d parts", "many")
    tracebridge.stop()
    logs = [e for e in tracebridge.read(trace_path) if e.kind == "log"]
    assert [e.name for e in logs] == [
        "order 0 loaded from db",
        "order 1 loaded from db",
        "order 2 loaded from db",
        "4 items",
        "%d parts",
    ]
    # It arrived, marked: the template as the body, the arguments and the error beside it.
    assert logs[4].metadata["positional_args"] == ["many"]
    assert logs[4].metadata["format_error"] == "TypeError: %d format: a real number is required, not str"
    assert logs[0].metadata["message_template"] == "order %d loaded from %s"
    assert "positional_args" not in logs[0].metadata
    # A message that does not format stays the body, and its arguments metadata.
    assert _positional("bad %d", ("x",)) == (None, "TypeError: %d format: a real number is required, not str")
    assert _positional("ok", ()) == (None, None)
    names = [n for n, _, _, _ in perfetto_import(trace_path).slices]
    assert names.count("order %d loaded from %s") == 3 and "%(n)s items" in names


def test_start_names_the_processor_that_holds_the_recording(  # type: ignore[no-untyped-def]
    trace_path: Path, tmp_path: Path, configure
) -> None:
    configure(processors=[PerfettoProcessor(trace_path)], logger_factory=structlog.ReturnLoggerFactory())
    structlog.get_logger().info("hello")
    with pytest.raises(RuntimeError, match=r"\(structlog's PerfettoProcessor started it\)"):
        tracebridge.start(2, tmp_path / "other.perfetto-trace")
    tracebridge.stop()
