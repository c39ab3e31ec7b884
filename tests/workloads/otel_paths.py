"""An OpenTelemetry workload through PerfettoSpanProcessor, run once on each path (compiled copy and
conversion of ended spans, pure Python) by tests/otel/test_otel_processor.py: it prints what was
recorded, normalized (times relative to the first event, threads numbered), as JSON. Ids and times are
the workload's own (a seeded id generator, explicit timestamps), so both runs record the same spans.
Every shape of span the processor handles is here: attributes plain and not, kinds, statuses, events and
exceptions, links, remote parents, a span ended on another thread, one still open at the end, one begun
before the recording, reserved and secret attribute names, names that need cleaning, two resources."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from typing import Any

from normalize import normalized
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)

import tracebridge
from tracebridge.otel import PerfettoSpanProcessor


class SeededIds(IdGenerator):
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self.random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self.random.getrandbits(128) or 1


def workload(provider: TracerProvider, other: TracerProvider) -> Any:
    """The spans (times 1 us apart, from well after the recording began); returns one left open."""
    tracer = provider.get_tracer("tests.otel_paths", "1.0")
    t = [time.time_ns() + 10**10]

    def at() -> int:
        t[0] += 1_000
        return t[0]

    def run(name: str, **options: Any) -> Any:
        span = tracer.start_span(name, start_time=at(), **options)
        return span

    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))
    root = run("GET /cart", kind=SpanKind.SERVER, attributes={"http.status_code": 200, "ok": True})
    ctx = set_span_in_context(root)
    for i in range(3):
        child = run("db.query", context=ctx, attributes={"item": i, "queue": "orders", "ratio": 0.5})
        child.end(end_time=at())
    shapes = [
        ("tags", {"attributes": {"tags": ("a", "b"), "n": 1}}),
        ("reserved", {"attributes": {"category": "io", "flows": 3, "level": 4}}),
        ("secret", {"attributes": {"password": "hunter2", "url": "https://u:p@h/?token=x"}}),
        ("non-ascii é", {}),
        ("encoded#k=v#", {}),
        ("remote child", {"context": set_span_in_context(NonRecordingSpan(remote))}),
        ("linked", {"links": [Link(remote, {"why": "batch"})], "context": ctx}),
        ("client", {"kind": SpanKind.CLIENT, "context": ctx}),
        ("empty attributes", {"attributes": {}}),
    ]
    for name, options in shapes:
        run(name, **options).end(end_time=at())
    ok = run("ok", context=ctx)
    ok.set_status(Status(StatusCode.OK))
    ok.end(end_time=at())
    failed = run("failed", context=ctx)
    try:
        raise ValueError("card declined")
    except ValueError as exc:
        failed.record_exception(exc, timestamp=at())
    failed.set_status(Status(StatusCode.ERROR, "declined"))
    failed.end(end_time=at())
    evented = run("evented", context=ctx)
    evented.add_event("cache_miss", {"key": "cart:42"}, timestamp=at())
    evented.end(end_time=at())
    errored = run("error status only", context=ctx)
    errored.set_status(Status(StatusCode.ERROR))
    errored.end(end_time=at())
    backwards = run("ends before it began")
    backwards.end(end_time=t[0] - 10**6)
    early = tracer.start_span("began before the recording", start_time=time.time_ns() - 10**10)
    early.end(end_time=at())
    moved = run("ended on another thread", context=ctx)
    end_at = at()
    threading.Thread(target=lambda: moved.end(end_time=end_at)).start()
    time.sleep(0.05)
    elsewhere = other.get_tracer("tests.other").start_span("other resource", start_time=at())
    elsewhere.end(end_time=at())
    root.end(end_time=at())
    return run("still open")


def main(path: str) -> None:
    result: dict[str, Any] = {"accelerated": tracebridge.accelerated}
    for label, output in (("memory", None), ("file", path)):
        provider = TracerProvider(
            resource=Resource.create({"service.name": "checkout"}),
            id_generator=SeededIds(1),
            shutdown_on_exit=False,
        )
        other = TracerProvider(
            resource=Resource.create({"service.name": "billing"}),
            id_generator=SeededIds(2),
            shutdown_on_exit=False,
        )
        session = tracebridge.start(level=2, output=output)
        provider.add_span_processor(PerfettoSpanProcessor(session))
        other.add_span_processor(PerfettoSpanProcessor(session))
        open_span = workload(provider, other)
        session = tracebridge.stop()
        open_span.end()
        events = session.events if output is None else tracebridge.read(path)
        result[label] = normalized(events)
        result[f"{label}_stats"] = [session.stats.recorded, session.stats.dropped]
        result[f"{label}_process"] = session.process_name
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
