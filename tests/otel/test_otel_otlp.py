"""The Collector path: tracebridge spans through the bridge, exported by the standard OTLP/HTTP exporter to a
loopback receiver that decodes the requests with opentelemetry-proto."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tracebridge


class Receiver(http.server.BaseHTTPRequestHandler):
    requests: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        Receiver.requests.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    Receiver.requests = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_tracebridge_spans_reach_an_otlp_receiver(collector: str) -> None:
    exporter = OTLPSpanExporter(endpoint=collector, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "jobs"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.configure(otel=provider)
    try:
        with tracebridge.span("tb.job", level=2, batch=7):
            with provider.get_tracer("app").start_as_current_span("otel.step"):
                pass
            with pytest.raises(RuntimeError), tracebridge.span("tb.fails", level=2):
                raise RuntimeError("boom")
    finally:
        tracebridge.configure(otel=None)
        provider.shutdown()
    spans = {
        s.name: (s, rs.resource)
        for r in Receiver.requests
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    }
    job, resource = spans["tb.job"]
    step, _ = spans["otel.step"]
    fails, _ = spans["tb.fails"]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "jobs"
    assert {a.key: a.value.int_value for a in job.attributes} == {"batch": 7}
    assert step.trace_id == job.trace_id == fails.trace_id and step.parent_span_id == job.span_id
    assert fails.status.code == 2  # STATUS_CODE_ERROR
    assert [e.name for e in fails.events] == ["exception"]
