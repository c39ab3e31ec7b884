"""Sampling costs against OpenTelemetry, measured in the same run.

A sampled-out span vs an OpenTelemetry SDK span dropped by its TraceIdRatioBased sampler (target: at least
20x cheaper), for a root span (a decision is made) and for a span inside a dropped trace (the ParentBased
short cut; measured as a root with a child, minus the root). Also reported: a rate-limiter check and an
adaptive decision, in ns per call, and the floor under a dropped root (what the ``with`` statement, the
context variable and the clock read cost by themselves).

Run: python benchmarks/bench_sampling.py [--quick]
"""

from __future__ import annotations

import random
import sys

from _timing import on_both_paths, per_op_ns, row

import tracebridge
from tracebridge.sampling import Adaptive, ParentBased, RateLimiter, TraceIdRatio

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
REPEAT = 3 if QUICK else 7


def work() -> None:
    pass


def otel(ratio_sampler: object) -> tuple[float, float]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class NoopExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider(sampler=ratio_sampler)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    tracer = provider.get_tracer("bench")

    def root(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("load", attributes={"path": "app.toml"}):
                work()

    def pair(n: int) -> None:
        for _ in range(n):
            with tracer.start_as_current_span("request"), tracer.start_as_current_span("load"):
                work()

    r = per_op_ns(root, N // 5, REPEAT)
    return r, per_op_ns(pair, N // 5, REPEAT) - r


def ours(sampling: object) -> tuple[float, float]:
    tracebridge.start(level=2, sampling=sampling)

    def root(n: int) -> None:
        for _ in range(n):
            with tracebridge.span("load", level=2, path="app.toml"):
                work()

    def pair(n: int) -> None:
        for _ in range(n):
            with tracebridge.span("request", level=2), tracebridge.span("load", level=2):
                work()

    r = per_op_ns(root, N, REPEAT)
    result = r, per_op_ns(pair, N, REPEAT) - r
    session = tracebridge.stop()
    assert session.stats.total_recorded == 0
    return result


class _Ev:
    __slots__ = ("kind", "level", "metadata", "name", "trace_id")

    def __init__(self, name: str) -> None:
        self.kind = "span"
        self.level = 2
        self.metadata = None
        self.name = name
        self.trace_id = random.getrandbits(128)


def decisions() -> tuple[float, float]:
    limiter = RateLimiter(1e9)
    adaptive = Adaptive(100.0)
    events = [_Ev(f"op{i % 20}") for i in range(1000)]

    def limit(n: int) -> None:
        decide = limiter.decide
        ev = events[0]
        for _ in range(n):
            decide(ev)

    def adapt(n: int) -> None:
        decide = adaptive.decide
        for i in range(n):
            decide(events[i % 1000])

    return per_op_ns(limit, N, REPEAT), per_op_ns(adapt, N, REPEAT)


def floor() -> tuple[float, float, float]:
    """What any dropped root must pay in pure Python, measured on its own: the ``with`` statement over
    ``span(...)`` that does nothing (a level that is off), making it the current span (a context
    variable set and reset, so that its children see the decision), and one clock read (its start, so
    that a failure can still be recorded with its duration)."""
    import contextvars
    import time

    var: contextvars.ContextVar[object] = contextvars.ContextVar("bench", default=None)
    tracebridge.start(level=1)

    def off(n: int) -> None:
        for _ in range(n):
            with tracebridge.span("load", level=2, path="app.toml"):
                work()

    def current(n: int) -> None:
        set_, reset = var.set, var.reset
        for _ in range(n):
            reset(set_(n))

    def clock(n: int) -> None:
        now = time.perf_counter_ns
        for _ in range(n):
            now()

    result = per_op_ns(off, N, REPEAT), per_op_ns(current, N, REPEAT), per_op_ns(clock, N, REPEAT)
    tracebridge.stop()
    return result


def main() -> None:
    from opentelemetry.sdk.trace.sampling import ParentBased as OtelParentBased
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    otel_root, _ = otel(TraceIdRatioBased(0.0))
    _, otel_child = otel(OtelParentBased(TraceIdRatioBased(0.0)))
    del _
    our_root, our_child = ours(ParentBased(TraceIdRatio(0.0)))
    limit, adapt = decisions()
    off, current, clock = floor()
    print(f"tracebridge sampling benchmarks (N={N}, best of {REPEAT}; Python {sys.version.split()[0]})")
    print(
        row("sampled-out root span vs OTel span dropped by TraceIdRatioBased", our_root, otel_root, ">= 20x")
    )
    print(row("span inside a dropped trace vs OTel ParentBased child", our_child, otel_child, ">= 20x"))
    print(f"  rate-limiter check: {limit:.0f} ns per call; adaptive decision: {adapt:.0f} ns per call")
    least = off + current + clock
    print(
        f"  the least a dropped root can cost in pure Python: {least:.0f} ns (span at an off level {off:.0f}"
        f" + context variable set/reset {current:.0f} + clock read {clock:.0f}), i.e. at most"
        f" {otel_root / least:.1f}x cheaper than the OTel anchor"
    )


if __name__ == "__main__":
    on_both_paths(main)
