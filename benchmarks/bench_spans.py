"""Cost of the span API against the anchors, measured in the same run.

(a) a recorded ``with span()`` vs an OpenTelemetry SDK span with a no-op exporter: target >= 10x cheaper;
(b) a span at a level that is off vs ``with contextlib.nullcontext():`` around the same call (target: no
    dearer), and an ``if tracebridge.active(3):`` guard vs one empty call (target: at most 1.5x as dear)
    and vs a plain ``if flag:`` (within 2x);
(e) a ``@traced`` function's per-call overhead vs viztracer's on the same function (reported).

Run: python benchmarks/bench_spans.py [--quick]
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from _timing import on_both_paths, per_op_ns, row

import tracebridge

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
REPEAT = 3 if QUICK else 7


def work() -> None:
    pass


def otel_anchor() -> float:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class NoopExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    tracer = provider.get_tracer("bench")

    def run(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("load", attributes={"path": "app.toml"}):
                work()

    return per_op_ns(run, N // 5, REPEAT)


def recorded_span(path: str) -> tuple[float, float]:
    """Per-span cost on the application's thread, and end to end (until the writer has written them)."""

    def loop(n: int) -> None:
        for _ in range(n):
            with tracebridge.span("load", level=2, path="app.toml"):
                work()

    def run(n: int) -> None:
        loop(n)
        tracebridge.flush()  # (timed: the writer's encoding and file writes are inside)

    # The application's thread alone: the writer sleeps until each loop is done (running, it would take
    # its share of the lock, and a crowded queue hands it the lock: both would count here).
    tracebridge.configure(thread_buffer=4 * N, flush_interval=3600.0)  # (never half full: no yields)
    tracebridge.start(level=2, output=path)
    app = float("inf")
    for _ in range(REPEAT):
        app = min(app, per_op_ns(loop, N, 1))
        tracebridge.flush()
    alone = tracebridge.stop()
    # End to end: the writer runs as it does in a program, and the time ends when it has written all.
    tracebridge.configure(flush_interval=0.1)
    tracebridge.start(level=2, output=path)
    end_to_end = per_op_ns(run, N, REPEAT)
    session = tracebridge.stop()
    tracebridge.configure(thread_buffer=65536)
    assert session.stats.total_dropped == 0 == alone.stats.total_dropped, session.stats
    return app, end_to_end


def off_level() -> tuple[float, float, float, float, float, float, float]:
    tracebridge.start(level=2)

    def span_off(n: int) -> None:
        for _ in range(n):
            with tracebridge.span("verbose", level=3):
                work()

    def nullctx(n: int) -> None:
        for _ in range(n):
            with contextlib.nullcontext():
                work()

    flag = False

    def guard_active(n: int) -> None:
        active = tracebridge.active
        for _ in range(n):
            if active(3):
                work()

    def guard_flag(n: int) -> None:
        for _ in range(n):
            if flag:
                work()

    def empty_call(n: int) -> None:
        for _ in range(n):
            work()

    def call_guarded(n: int) -> None:
        active = tracebridge.active
        for _ in range(n):
            work()
            if active(3):
                work()

    def call_flagged(n: int) -> None:
        for _ in range(n):
            work()
            if flag:
                work()

    results = tuple(
        per_op_ns(f, N * 5, REPEAT)
        for f in (span_off, nullctx, guard_active, guard_flag, empty_call, call_guarded, call_flagged)
    )
    tracebridge.stop()
    return results  # type: ignore[return-value]


def traced_vs_viztracer(path: str) -> tuple[float, float, float]:
    def bare(n: int) -> None:
        for _ in range(n):
            work()

    traced_work = tracebridge.traced(level=2)(work)

    def traced(n: int) -> None:
        for _ in range(n):
            traced_work()

    base = per_op_ns(bare, N * 5, REPEAT)
    tracebridge.configure(thread_buffer=N + 10)
    tracebridge.start(level=2, output=path)
    ours = min(per_op_ns(traced, N, 1) for _ in range(REPEAT) if tracebridge.flush() or True)
    tracebridge.stop()
    tracebridge.configure(thread_buffer=65536)
    try:
        from viztracer import VizTracer
    except ImportError:
        return base, ours, float("nan")
    tracer = VizTracer(verbose=0, tracer_entries=10 * N + 1000)
    tracer.start()
    viz = per_op_ns(bare, N, REPEAT)
    tracer.stop()
    tracer.clear()
    return base, ours, viz


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.perfetto-trace")
        otel = otel_anchor()
        app, e2e = recorded_span(path)
        off, null, g_active, g_flag, g_call, c_active, c_flag = off_level()
        base, traced, viz = traced_vs_viztracer(path)
    print(f"tracebridge span benchmarks (N={N}, best of {REPEAT}; Python {sys.version.split()[0]})")
    print("(a) recorded span vs OpenTelemetry SDK span (no-op exporter):")
    print(row("with span(): app thread vs OTel span", app, otel, ">= 10x"))
    print(row("with span(): incl. writer encoding + file write vs OTel", e2e, otel, ">= 10x"))
    print("(b) spans whose level is off:")
    print(row("span(level=3) off vs nullcontext (around the same call)", off, null, ">= 1.0x"))
    print(row("if active(3): vs one empty call (tight loop)", g_active, g_call, "<= 1.5x: ratio >= 0.67"))
    print(row("if active(3): vs if flag: (tight loop)", g_active, g_flag, "within 2x: ratio >= 0.5"))
    print(row("work(); if active(3): vs work(); if flag:", c_active, c_flag, "within 2x: ratio >= 0.5"))
    print("(e) @traced function, per-call overhead over a bare call:")
    print(row("tracebridge @traced vs viztracer", traced - base, viz - base, "report"))


if __name__ == "__main__":
    on_both_paths(main)
