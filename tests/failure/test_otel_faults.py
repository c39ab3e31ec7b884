"""The OpenTelemetry processor, exporter, samplers and bridge never raise into the SDK or the application."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext

import tracebridge
from tracebridge.otel import (
    ConsistentRatioSampler,
    PerfettoSpanExporter,
    PerfettoSpanProcessor,
    PipelineSampler,
)
from tracebridge.reading import read_trace
from tracebridge.sampling import Predicate


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    p = TracerProvider(shutdown_on_exit=False)
    yield p
    p.shutdown()


ALLOWED: dict[str, Any] = {
    "s": "text \udcff with a lone surrogate",
    "b": True,
    "i": -(2**63),
    "big": 2**63 - 1,
    "f": float("nan"),
    "inf": float("inf"),
    "ss": ["a", "b"],
    "bs": [True, False],
    "is": [1, 2, 3],
    "fs": [0.5, 1.5],
    "empty": [],
    "long": "x" * 100_000,
}


def test_attributes_of_every_type_and_bad_values(
    provider: TracerProvider, trace_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    tracer = provider.get_tracer("t")
    # (A self-containing list set directly on an OTel span makes the SDK itself recurse until
    # RecursionError: through the bridge, tracebridge sanitizes it first; see the next test.)
    with caplog.at_level(logging.CRITICAL, logger="opentelemetry"):  # the SDK warns about the bad ones
        with tracer.start_as_current_span("typed", attributes=ALLOWED) as span:
            span.set_attribute("object", object())  # type: ignore[arg-type]
            span.set_attribute("mixed", [1, "a"])  # type: ignore[arg-type]
            span.add_event("event", {"nested": 1})
        span.end()  # ended twice: the SDK warns, nothing is recorded twice
    tracebridge.stop()
    trace = read_trace(trace_path)
    assert trace.problems == []
    (ev,) = [e for e in trace.events if e.kind == "span"]
    md = ev.metadata
    assert md["i"] == -(2**63) and md["big"] == 2**63 - 1 and md["b"] is True
    assert md["ss"] == ["a", "b"] and md["is"] == [1, 2, 3] and md["fs"] == [0.5, 1.5]
    assert md["s"] == "text \ufffd with a lone surrogate"
    assert md["long"].startswith("x") and md["long"].endswith("chars]")
    assert md["f"] != md["f"] and md["inf"] == float("inf")


def test_bridge_with_hostile_metadata() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    cyclic: list[Any] = ["a"]
    cyclic.append(cyclic)

    class NoRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    tracebridge.configure(otel=provider)
    try:
        with tracebridge.span("hostile", level=2, cyclic=cyclic, thing=NoRepr(), mixed=[1, "a"], none=None):
            pass
    finally:
        tracebridge.configure(otel=None)
        provider.shutdown()
    (span,) = exporter.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs["cyclic"] == ("a", "<cycle>")  # sanitized when the span ended
    assert attrs["thing"].startswith("<unrepresentable NoRepr")
    assert attrs["mixed"] == "[1, 'a']" and "none" not in attrs


def test_failing_sampler_stage_keeps_the_span(lenient: None) -> None:
    def broken(ev: object) -> bool:
        raise ValueError("predicate bug")

    provider = TracerProvider(sampler=PipelineSampler(Predicate(broken)), shutdown_on_exit=False)
    with provider.get_tracer("t").start_as_current_span("kept") as span:
        assert span.get_span_context().trace_flags.sampled


def test_force_flush_and_shutdown_timeouts_hold(provider: TracerProvider, trace_path: Path) -> None:
    tracebridge.configure(flush_interval=3600, thread_buffer=200_000)
    try:
        processor = PerfettoSpanProcessor(trace_path)
        provider.add_span_processor(processor)
        tracer = provider.get_tracer("t")
        for i in range(50_000):
            with tracer.start_as_current_span("s", attributes={"i": i}):
                pass
        # Too short for the writer to encode 50,000 spans: the flush gives up and says so.
        assert processor.force_flush(timeout_millis=0) is False
        assert processor.force_flush(timeout_millis=60_000) is True
        processor.shutdown()
        session = tracebridge.stop()
    finally:
        tracebridge.configure(flush_interval=0.1, thread_buffer=65536)
    assert session.stats.recorded["span"] == 50_000
    assert processor.force_flush() is True  # after the recording stopped: nothing to do


def test_exporter_after_shutdown_and_after_stop(trace_path: Path) -> None:
    exporter = PerfettoSpanExporter(trace_path)
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("before"):
        pass
    tracebridge.stop()
    with provider.get_tracer("t").start_as_current_span("after stop"):
        pass  # the exporter reports FAILURE to the SDK, which logs it; nothing raises
    provider.shutdown()
    assert [e.name for e in tracebridge.read(trace_path) if e.kind == "span"] == ["before"]


def test_a_malformed_span_costs_itself_only(trace_path: Path, lenient: None) -> None:
    # ReadableSpans built by hand (or by another SDK's processor) reach the exporter in batches: one
    # that cannot be read must not take the rest of its batch with it, and its loss is counted.
    exporter = PerfettoSpanExporter(trace_path)
    now = time.time_ns()

    def span(name: str, span_id: int, **extra: Any) -> ReadableSpan:
        return ReadableSpan(name, SpanContext(7, span_id, False), start_time=now, end_time=now + 10, **extra)

    batch = [span("a", 1), span("bad", 2, kind=None), span("c", 3)]
    assert exporter.export(batch) is SpanExportResult.SUCCESS
    session = tracebridge.stop()
    assert sorted(e.name for e in tracebridge.read(trace_path) if e.kind == "span") == ["a", "c"]
    assert session.stats.dropped["internal_error"] == {"span": 1}


def test_consistent_sampler_with_garbage_tracestate() -> None:
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.trace.sampling import Decision
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    sampler = ConsistentRatioSampler(0.5)
    low, high = 5, (1 << 56) - 1  # randomness far below / above the 50% threshold
    for ot in ("rv:zz", "th:", "rv:123", ";;;", "th:fffffffffffffffff;rv:"):
        for trace_id, expected in ((low, Decision.DROP), (high, Decision.RECORD_AND_SAMPLE)):
            ctx = SpanContext(trace_id, 6, True, TraceFlags(1), TraceState([("ot", ot)]))
            parent = otel_trace.set_span_in_context(NonRecordingSpan(ctx))
            # A bad rv is ignored: the trace id decides, as with no tracestate at all.
            assert sampler.should_sample(parent, trace_id, "op").decision is expected
