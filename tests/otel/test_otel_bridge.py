"""The two-way bridge: tracebridge spans as OpenTelemetry spans, one context both ways."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import tracebridge
from tracebridge.logging import TraceContextFilter
from tracebridge.otel import PerfettoSpanProcessor
from tracebridge.sampling import ParentBased, TraceIdRatio


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.configure(otel=provider)
    try:
        yield provider, exporter
    finally:
        tracebridge.configure(otel=None)
        provider.shutdown()


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def test_spans_are_otel_spans_and_share_one_context(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    tracer = provider.get_tracer("app")
    stream = io.StringIO()
    log = logging.getLogger("bridge.test")
    log.propagate = False
    handler = logging.StreamHandler(stream)
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(logging.Formatter("%(trace_id)s %(span_id)s %(message)s"))
    log.addHandler(handler)
    try:
        with (
            tracer.start_as_current_span("otel.request"),
            tracebridge.span("tb.handle", level=2, user="ann") as tb,
        ):
            tb.set(items=3)
            log.warning("inside")
            tracebridge.instant("cache_miss", key="k")
            with tracer.start_as_current_span("otel.query"):
                pass
    finally:
        log.removeHandler(handler)
    spans = by_name(exporter.get_finished_spans())
    request, handle, query = spans["otel.request"], spans["tb.handle"], spans["otel.query"]
    trace_id = request.context.trace_id
    assert handle.context.trace_id == query.context.trace_id == trace_id
    assert handle.parent is not None and handle.parent.span_id == request.context.span_id
    assert query.parent is not None and query.parent.span_id == handle.context.span_id
    assert (tb.trace_id, tb.span_id) == (trace_id, handle.context.span_id)
    assert dict(handle.attributes or {}) == {"user": "ann", "items": 3}
    assert handle.instrumentation_scope is not None and handle.instrumentation_scope.name == "tracebridge"
    assert [(e.name, dict(e.attributes or {})) for e in handle.events] == [("cache_miss", {"key": "k"})]
    assert stream.getvalue() == f"{trace_id:032x} {handle.context.span_id:016x} inside\n"


def test_failures_and_handled_exceptions(exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    _, exporter = exported
    with pytest.raises(KeyError), tracebridge.span("raises", level=2):
        {}["missing"]
    with tracebridge.span("handles", level=2) as s:
        try:
            int("x")
        except ValueError as exc:
            s.fail(exc)
    spans = by_name(exporter.get_finished_spans())
    raised = spans["raises"]
    assert raised.status.status_code is StatusCode.ERROR
    assert [e.name for e in raised.events] == ["exception"]
    assert (
        raised.events[0].attributes is not None
        and raised.events[0].attributes["exception.type"] == "KeyError"
    )
    assert spans["handles"].status.status_code is StatusCode.ERROR


def test_perfetto_processor_records_each_span_once(
    exported: tuple[TracerProvider, InMemorySpanExporter], trace_path: Path
) -> None:
    provider, _ = exported
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    with (
        provider.get_tracer("app").start_as_current_span("otel.outer"),
        tracebridge.span("tb.inner", level=2),
    ):
        pass
    tracebridge.stop()
    events = [e for e in tracebridge.read(trace_path) if e.kind == "span"]
    assert sorted(e.name for e in events) == ["otel.outer", "tb.inner"]
    outer, inner = sorted(events, key=lambda e: e.start_ns)
    assert outer.trace_id == inner.trace_id  # one trace, on one thread track
    assert not outer.overlapping and not inner.overlapping


def test_an_instant_inside_an_otel_span_is_written_once(
    exported: tuple[TracerProvider, InMemorySpanExporter], trace_path: Path
) -> None:
    # The bridge makes the instant an event of the OTel span (for exporters); the processor, which
    # writes OTel events as instants, leaves that one to tracebridge. The span's own events stay.
    provider, exporter = exported
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    with provider.get_tracer("app").start_as_current_span("otel.request") as span:
        tracebridge.instant("ping", level=2, n=1)
        span.add_event("own event")
    tracebridge.stop()
    instants = sorted(e.name for e in tracebridge.read(trace_path) if e.kind == "instant")
    assert instants == ["own event", "ping"]
    (exported_span,) = [s for s in exporter.get_finished_spans() if s.name == "otel.request"]
    assert [e.name for e in exported_span.events] == ["ping", "own event"]


def test_sampled_out_spans_keep_their_twin_and_context(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    tracebridge.start(level=2, sampling=ParentBased(TraceIdRatio(0.0)))
    try:
        with (
            tracebridge.span("dropped", level=2) as s,
            provider.get_tracer("app").start_as_current_span("child"),
        ):
            pass
    finally:
        session = tracebridge.stop()
    assert s.sampled is False and session.events == []
    spans = by_name(exporter.get_finished_spans())
    assert (
        spans["child"].parent is not None
        and spans["child"].parent.span_id == spans["dropped"].context.span_id
    )
    assert tracebridge.stats().total_recorded == 0


def test_bridge_setup() -> None:
    with pytest.raises(ValueError, match="otel must be"):
        tracebridge.configure(otel="yes")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.configure(otel=provider)
    try:
        tracebridge.start(level=2)
        tracebridge.stop()  # the bridge goes on after a recording stops
        with tracebridge.span("after stop", level=2):
            pass
    finally:
        tracebridge.configure(otel=None)
    assert [s.name for s in exporter.get_finished_spans()] == ["after stop"]
    with tracebridge.span("off", level=2):
        pass
    assert len(exporter.get_finished_spans()) == 1


def test_instrumented_calls_become_otel_spans(
    exported: tuple[TracerProvider, InMemorySpanExporter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys
    import time

    from tracebridge.instrument import instrument

    provider, exporter = exported
    (tmp_path / "bridged_calls.py").write_text(
        "import time\ndef slow():\n    time.sleep(0.002)\ndef fast():\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import bridged_calls

    full = instrument("bridged_calls")
    try:
        with provider.get_tracer("app").start_as_current_span("outer"):
            bridged_calls.fast()
    finally:
        full.uninstrument()
    timed = instrument("bridged_calls", min_duration="1ms")
    try:
        with provider.get_tracer("app").start_as_current_span("outer2"):
            t0 = time.time_ns()
            bridged_calls.slow()
            bridged_calls.fast()  # under min_duration: no span anywhere
            t1 = time.time_ns()
    finally:
        timed.uninstrument()
        del sys.modules["bridged_calls"]
    spans = by_name(exporter.get_finished_spans())
    assert spans["bridged_calls.fast"].parent.span_id == spans["outer"].context.span_id  # type: ignore[union-attr]
    slow = spans["bridged_calls.slow"]
    assert slow.parent is not None and slow.parent.span_id == spans["outer2"].context.span_id
    # Its times are the call's (converted from the span clock with the session's offset: allow 1 ms).
    assert t0 - 1_000_000 <= slow.start_time <= slow.end_time <= t1 + 1_000_000  # type: ignore[operator]
    assert slow.end_time - slow.start_time >= 2_000_000  # type: ignore[operator]
    assert sum(s.name == "bridged_calls.fast" for s in exporter.get_finished_spans()) == 1


def test_secrets_never_reach_an_exporter(exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    _, exporter = exported
    tracebridge.start(level=2)
    try:
        with tracebridge.span("login", user="ann", password="hunter2", cfg={"api_key": "k", "n": 1}) as s:
            s.set(session_token="t")
            tracebridge.instant("retry", authorization="Bearer x")
    finally:
        tracebridge.stop()
    (login,) = exporter.get_finished_spans()
    attrs = dict(login.attributes or {})
    assert attrs["user"] == "ann" and attrs["password"] == "[scrubbed]"
    assert attrs["session_token"] == "[scrubbed]"
    assert "'k'" not in attrs["cfg"] and "[scrubbed]" in attrs["cfg"]
    (event,) = login.events
    assert dict(event.attributes or {})["authorization"] == "[scrubbed]"


def test_attributes_keep_their_types_and_budgets() -> None:
    from tracebridge.otel import otel_attributes

    attrs = otel_attributes({"ids": list(range(1500)), "sql": "select 1", "cfg": {"api_key": "k"}, "n": None})
    assert attrs["ids"] == tuple(range(1500)) and attrs["sql"] == "select 1"
    assert "k'" not in attrs["cfg"] and "n" not in attrs


def test_many_bridged_instants_and_the_spans_own_event(
    exported: tuple[TracerProvider, InMemorySpanExporter], trace_path: Path
) -> None:
    provider, _ = exported
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    with provider.get_tracer("app").start_as_current_span("otel.batch") as span:
        for i in range(2000):  # more than the SDK keeps: the events it lets go are freed
            tracebridge.instant("tick", level=2, i=i)
        span.add_event("own event")
    tracebridge.stop()
    names = [e.name for e in tracebridge.read(trace_path) if e.kind == "instant"]
    assert names.count("tick") == 2000 and names.count("own event") == 1
