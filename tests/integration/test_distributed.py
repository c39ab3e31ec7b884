"""W3C trace context across processes: a client here, a loopback HTTP server in a second process, both
tracing with OpenTelemetry into their own Perfetto files, then ``tracebridge merge``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import tracebridge
from tracebridge.cli import main as cli
from tracebridge.otel import ConsistentRatioSampler, PerfettoSpanProcessor
from tracebridge.reading import read_trace

SERVER = textwrap.dedent(
    """
    import http.server, json, sys, threading
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    import tracebridge
    from tracebridge.otel import ConsistentRatioSampler, PerfettoSpanProcessor

    # Not parent-based: the server decides on its own, and must reach the client's decision.
    provider = TracerProvider(
        sampler=ConsistentRatioSampler(0.5), resource=Resource.create({"service.name": "server"})
    )
    provider.add_span_processor(PerfettoSpanProcessor(sys.argv[1]))
    tracer = provider.get_tracer("server")
    propagator = TraceContextTextMapPropagator()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            carrier = {k.lower(): v for k, v in self.headers.items()}
            parent = propagator.extract(carrier)
            name = "GET " + self.path
            with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
                with tracebridge.span("load", level=2):
                    ctx = span.get_span_context()
                    body = json.dumps({"trace_id": ctx.trace_id, "sampled": ctx.trace_flags.sampled}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_port, flush=True)
    sys.stdin.read()  # until the test closes it
    server.shutdown()
    tracebridge.stop()
    """
)


def _requests(server: subprocess.Popen[str], client_trace: Path) -> list[tuple[int, bool, int, bool]]:
    assert server.stdout is not None
    port = int(server.stdout.readline())
    provider = TracerProvider(
        sampler=ConsistentRatioSampler(0.5),
        resource=Resource.create({"service.name": "client"}),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(PerfettoSpanProcessor(client_trace))
    tracer = provider.get_tracer("client")
    propagator = TraceContextTextMapPropagator()
    pairs = []
    for i in range(40):
        with tracer.start_as_current_span("call", kind=SpanKind.CLIENT) as span:
            headers: dict[str, str] = {}
            propagator.inject(headers)
            request = urllib.request.Request(f"http://127.0.0.1:{port}/orders/{i}", headers=headers)
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            ctx = span.get_span_context()
            pairs.append((ctx.trace_id, ctx.trace_flags.sampled, answer["trace_id"], answer["sampled"]))
    tracebridge.stop()
    return pairs


def test_context_and_sampling_across_processes(tmp_path: Path) -> None:
    server_trace, client_trace, merged = (tmp_path / n for n in ("server.pt", "client.pt", "merged.pt"))
    with subprocess.Popen(
        [sys.executable, "-c", SERVER, str(server_trace)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            pairs = _requests(server, client_trace)
            server.stdin.close()  # type: ignore[union-attr]
            assert server.wait(timeout=60) == 0
        finally:
            if server.poll() is None:
                server.kill()
    # One trace id on both sides, and the same consistent decision.
    assert all(mine == theirs and kept == kept_there for mine, kept, theirs, kept_there in pairs)
    kept_ids = {tid for tid, kept, _, _ in pairs if kept}
    assert 8 <= len(kept_ids) <= 32

    assert cli(["merge", str(client_trace), str(server_trace), "-o", str(merged)]) == 0
    trace = read_trace(merged)
    assert trace.problems == []
    calls = {e.trace_id for e in trace.events if e.name == "call"}
    handled = {e.trace_id for e in trace.events if e.name.startswith("GET /orders/")}
    assert calls == handled == kept_ids
    # The server's tracebridge spans are inside its OTel spans, in the same trace.
    assert {e.trace_id for e in trace.events if e.name == "load"} <= kept_ids | {0}
    assert len({e.thread_id for e in trace.events if e.kind == "span"}) >= 2
