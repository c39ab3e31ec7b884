"""Producers faster than the writer: what each back-pressure policy costs and keeps, and memory.

(l) a tight loop (two nested spans an iteration) with the default ``on_full="drop"``: the share of spans
    dropped because the writer falls behind (reported; the compiled core's issue sets the goal);
(m) the same loop with ``on_full="block"``, END TO END (until the writer has written everything; nothing
    dropped, checked) against two anchors measured in the same run: the same loop with a queue large
    enough that nothing is dropped (the writer's cost without back-pressure), and an OpenTelemetry SDK
    span pair with a no-op exporter;
(n) RSS growth while 1M spans stream to a file, in each mode, each in a fresh process
    (``resource.getrusage``: peak RSS during the run minus RSS before it; target <= 50 MB), and the bytes
    a queued span holds (``tracemalloc``).

Run: python benchmarks/bench_load.py [--quick]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time

from _timing import on_both_paths, row

import tracebridge

QUICK = "--quick" in sys.argv
N = 50_000 if QUICK else 150_000  # iterations of the tight loop (two spans each)
RSS_SPANS = 200_000 if QUICK else 1_000_000

CHILD = textwrap.dedent(
    """
    import json, sys, time, tracebridge
    mode, n, cap, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    tracebridge.configure(on_full=mode, thread_buffer=cap)
    tracebridge.start(level=2, output=path)
    t0 = time.perf_counter_ns()
    for i in range(n):
        with tracebridge.span("outer", level=2):
            with tracebridge.span("inner", level=2):
                pass
    t1 = time.perf_counter_ns()
    session = tracebridge.stop()
    t2 = time.perf_counter_ns()
    print(json.dumps({"app_ns": (t1 - t0) / (2 * n), "e2e_ns": (t2 - t0) / (2 * n),
                      "recorded": session.stats.total_recorded, "dropped": session.stats.total_dropped}))
    """
)

RSS_CHILD = textwrap.dedent(
    """
    import json, os, resource, sys, tracebridge
    mode, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    tracebridge.configure(on_full=mode)
    for _ in range(1000):  # warm up what a first span allocates once
        with tracebridge.span("warm"):
            pass
    with open("/proc/self/statm") as f:
        before = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    before = max(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    tracebridge.start(level=2, output=path)
    for i in range(n):
        with tracebridge.span("op"):
            pass
    session = tracebridge.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (peak - before) / 1024, "recorded": session.stats.total_recorded,
                      "dropped": session.stats.total_dropped}))
    """
)

QUEUED_CHILD = textwrap.dedent(
    """
    import sys, tracemalloc, tracebridge
    from tracebridge._recorder.runtime import thread_state
    # The writer does not run (its round is an hour away, and the queue is never crowded enough to
    # wake it): spans stay queued.
    tracebridge.configure(flush_interval=3600.0, thread_buffer=200_000)
    tracebridge.start(level=2, output=sys.argv[1])
    with tracebridge.span("warm"):
        pass
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(50_000):
        with tracebridge.span("op"):
            pass
    print((tracemalloc.get_traced_memory()[0] - before) / len(thread_state().buf))
    tracemalloc.stop()
    tracebridge.stop()
    """
)


def child(code: str, *args: object) -> dict:  # type: ignore[type-arg]
    import json

    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=True, timeout=900
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def otel_pair_ns() -> float:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class NoopExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(NoopExporter()))
    tracer = provider.get_tracer("bench")
    n = N // 5
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
                pass
        best = min(best, (time.perf_counter_ns() - t0) / (2 * n))
    return best


def best_of(runs: int, *args: object) -> dict:  # type: ignore[type-arg]
    results = [child(CHILD, *args) for _ in range(runs)]
    return min(results, key=lambda r: r["e2e_ns"])


def main() -> None:
    runs = 1 if QUICK else 3
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "load.perfetto-trace")
        drop = [child(CHILD, "drop", N, 65536, path) for _ in range(runs)]
        block = best_of(runs, "block", N, 65536, path)
        unbounded = best_of(runs, "drop", N, 4 * N + 10, path)
        otel = otel_pair_ns()
        rss = {mode: child(RSS_CHILD, mode, RSS_SPANS, path) for mode in ("drop", "block")}
        queued = float(subprocess.run([sys.executable, "-c", QUEUED_CHILD, path], capture_output=True,
                                      text=True, check=True).stdout)  # fmt: skip
    assert block["dropped"] == 0 and unbounded["dropped"] == 0, (block, unbounded)
    print(f"tracebridge under load (tight loop of {N} x 2 spans; Python {sys.version.split()[0]})")
    print("(l) on_full='drop' (the default): spans dropped because the writer fell behind:")
    for r in drop:
        share = r["dropped"] / (r["recorded"] + r["dropped"])
        print(f"  {share:6.1%} dropped ({r['dropped']} of {r['recorded'] + r['dropped']}), every gap marked")
    print("(m) on_full='block', END TO END (writer's encoding and file writes inside; nothing dropped):")
    print(row("block vs a queue that never fills (no back-pressure)", block["e2e_ns"], unbounded["e2e_ns"],
              "report"))  # fmt: skip
    print(row("block vs OTel SDK span, no-op exporter", block["e2e_ns"], otel, "report"))
    print(f"  (application thread only, labelled: block {block['app_ns']:.0f} ns/span)")
    print(f"(n) RSS growth streaming {RSS_SPANS:,} spans to a file (fresh process each; target <= 50 MB):")
    for mode, r in rss.items():
        counts = f"{r['recorded']} recorded, {r['dropped']} dropped"
        print(f"  on_full={mode!r:8} {r['growth_mb']:6.1f} MB  ({counts})")
    held = "an entry of its thread's C ring" if tracebridge.accelerated else "a tuple and its two timestamps"
    print(f"  a queued plain span holds {queued:.0f} bytes ({held})")


if __name__ == "__main__":
    on_both_paths(main)
