"""The OpenTelemetry integration against the SDK alone, measured in the same run.

(h) An OTel span with PerfettoSpanProcessor against the same span with a SimpleSpanProcessor and a no-op
    exporter (target: at most 1.5x as dear, end to end): on the application's thread, and including the
    writer thread's encoding and file writes (nothing dropped: checked). The anchor runs between our runs
    and everything is timed with the garbage collector off.
(i) ConsistentRatioSampler against the SDK's TraceIdRatioBased, both at 1% (reported): the cost of a
    span the sampler drops, and of a sampling decision alone.

Run: python benchmarks/bench_otel.py [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _timing import gc_off, on_both_paths, per_op_ns, row
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

import tracebridge
from tracebridge.otel import ConsistentRatioSampler, PerfettoSpanProcessor

QUICK = "--quick" in sys.argv
N = 10_000 if QUICK else 50_000
REPEAT = 3 if QUICK else 7


class NoopExporter(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def spans(tracer: Any) -> Any:
    def run(n: int) -> None:
        start = tracer.start_as_current_span
        for i in range(n):
            with start("handle", attributes={"item": i, "queue": "orders"}):
                pass

    return run


def processor(tmp: Path) -> None:
    print("(h) an OTel span with PerfettoSpanProcessor vs with a no-op exporter")
    anchor = TracerProvider(shutdown_on_exit=False)
    anchor.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    base = float("inf")
    for label, interval, target in (
        ("app thread (writer waits till stop)", 3600.0, "reported"),
        ("app thread (writer running, GIL shared)", 0.1, "reported"),
    ):
        app_best = total_best = float("inf")
        for k in range(REPEAT):  # (the anchor between our runs: the machine's drift hits both alike)
            base = min(base, per_op_ns(spans(anchor.get_tracer("bench")), N, 1))
            tracebridge.configure(thread_buffer=4 * N, flush_interval=interval)  # no drops
            provider = TracerProvider(shutdown_on_exit=False)
            provider.add_span_processor(PerfettoSpanProcessor(tmp / f"otel{interval}-{k}.perfetto-trace"))
            run = spans(provider.get_tracer("bench"))
            with gc_off():  # (as the anchor is timed)
                t0 = time.perf_counter_ns()
                run(N)
                t1 = time.perf_counter_ns()
                session = tracebridge.stop()
                t2 = time.perf_counter_ns()
            assert session.stats.total_dropped == 0, session.stats
            app_best = min(app_best, (t1 - t0) / N)
            total_best = min(total_best, (t2 - t0) / N)
        print(dearer(f"PerfettoSpanProcessor, {label}", app_best, base, target))
    print(
        dearer("PerfettoSpanProcessor, END TO END (writer's encoding and I/O)", total_best, base, "<= 1.5x")
    )
    tracebridge.configure(flush_interval=0.1)


def samplers() -> None:
    print("(i) ConsistentRatioSampler vs the SDK's TraceIdRatioBased, at 1%")
    theirs = TracerProvider(sampler=TraceIdRatioBased(0.01), shutdown_on_exit=False)
    ours = TracerProvider(sampler=ConsistentRatioSampler(0.01), shutdown_on_exit=False)
    t_span = per_op_ns(spans(theirs.get_tracer("bench")), N, REPEAT)
    o_span = per_op_ns(spans(ours.get_tracer("bench")), N, REPEAT)
    print(row("a span the sampler drops (mostly)", o_span, t_span, "reported"))
    ts, os_ = TraceIdRatioBased(0.01), ConsistentRatioSampler(0.01)

    def decide(sampler: Any) -> Any:
        def run(n: int) -> None:
            should = sampler.should_sample
            for i in range(n):
                should(None, (i * 0x9E3779B97F4A7C15) & ((1 << 128) - 1), "op")

        return run

    print(
        row(
            "should_sample alone",
            per_op_ns(decide(os_), N, REPEAT),
            per_op_ns(decide(ts), N, REPEAT),
            "reported",
        )
    )


def dearer(label: str, ours: float, anchor: float, target: str) -> str:
    ratio = ours / anchor
    return f"  {label:<58} {ours:10.1f} vs {anchor:10.1f} ns/span  {ratio:6.2f}x as dear  (target: {target})"


def main() -> None:
    print(f"python {sys.version.split()[0]}, N={N}, best of {REPEAT}; ratio = anchor / ours unless noted")
    with tempfile.TemporaryDirectory() as tmp:
        processor(Path(tmp))
    samplers()


if __name__ == "__main__":
    on_both_paths(main)
