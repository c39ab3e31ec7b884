"""OpenTelemetry spans, tracebridge spans and log records in one Perfetto trace.

    python examples/otel_to_perfetto.py [otel.perfetto-trace]

An OTel-instrumented request handler (consistent 100% sampling, so that every trace is kept), with a
tracebridge span (one trace with the OTel spans, through ``configure(otel=...)``) and a log record
inside it, and a background job linked to the request. Open the trace
in https://ui.perfetto.dev: the process is named after service.name, the OTel spans nest with the
tracebridge span on the thread's track, the link is an arrow, and the failed span shows its back-trace.
"""

from __future__ import annotations

import logging
import sys
import threading

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import tracebridge
from tracebridge.logging import PerfettoHandler, TraceContextFilter
from tracebridge.otel import ParentBasedConsistentRatioSampler, PerfettoSpanProcessor, TraceLineSpanProcessor


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "otel.perfetto-trace"
    provider = TracerProvider(
        resource=Resource.create({"service.name": "checkout"}),
        sampler=ParentBasedConsistentRatioSampler(1.0),
    )
    provider.add_span_processor(PerfettoSpanProcessor(path))
    provider.add_span_processor(TraceLineSpanProcessor())  # a [TRACE] line per span
    tracebridge.configure(otel=provider)  # tracebridge spans join the OTel traces (and vice versa)
    tracer = provider.get_tracer("shop")

    log = logging.getLogger("shop")
    log.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stdout)
    console.addFilter(TraceContextFilter())
    console.setFormatter(logging.Formatter("%(levelname)s [%(trace_id).8s] %(name)s: %(message)s"))
    for handler in (console, PerfettoHandler(path)):
        log.addHandler(handler)
    lines = logging.getLogger("tracebridge.trace")
    lines.addHandler(console)
    lines.setLevel(logging.INFO)

    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER) as request:
        request.set_attribute("http.request.method", "POST")
        with tracebridge.span("validate_cart", level=2, items=3):
            log.info("cart has %d items", 3)
        with tracer.start_as_current_span("charge") as charge:
            try:
                raise TimeoutError("payment gateway timed out")
            except TimeoutError as exc:
                charge.record_exception(exc)
                charge.set_status(Status(StatusCode.ERROR, "gateway timeout"))
        request.set_attribute("http.response.status_code", 502)
    link = Link(request.get_span_context())

    def job() -> None:
        with tracer.start_as_current_span("send_receipt", links=[link]):
            log.info("receipt queued")

    worker = threading.Thread(target=job, name="jobs")
    worker.start()
    worker.join()

    provider.shutdown()
    session = tracebridge.stop()  # writes the trace (and its trace lines)
    tracebridge.configure(otel=None, log_lines=None)
    lines.removeHandler(console)
    events = tracebridge.read(path)
    print(f"\n{len(events)} events in {session.path}; open it in https://ui.perfetto.dev")


if __name__ == "__main__":
    main()
