"""What reading a trace costs: memory and time of a streamed read (``summary``: events to a
``SummaryBuilder`` as they complete, the records that wait to be sorted in temporary files) against a
whole read of the same file (``tracebridge.read``: every event kept), at two sizes, in the same run
(``--quick``: 60,000 and 240,000 spans; else 200,000 and 800,000).

The claim under test is issue 15's: a streamed read holds memory bounded whatever the trace's size (its
peak stays flat from one size to four times it), where a whole read grows with the events. Memory is
tracemalloc's peak (Python allocations); time is the best of a few reads, tracemalloc off.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))

from _timing import gc_off

from tracebridge._model import Event, ThreadInfo
from tracebridge.analysis import SummaryBuilder
from tracebridge.reading import read_trace
from tracebridge.sinks.perfetto.writer import PerfettoWriter

# Both sizes past the records a streamed read holds in memory at a time (reader.RUN_RECORDS: 100,000),
# two records a span: below that, a streamed read holds them all, as a whole read does.
SPANS = 60_000 if "--quick" in sys.argv else 200_000
THREADS = 4


def write(path: str, spans: int) -> None:
    """Nested spans (an outer with an inner that carries an argument) on THREADS threads."""
    w = PerfettoWriter(path)
    for k in range(THREADS):
        thread = ThreadInfo(os.getpid(), 1000 + k, f"worker-{k}")
        t = 1_000_000 * (k + 1)
        events = []
        for i in range(spans // THREADS // 2):
            events.append(
                Event("span", "inner", t + 10, t + 20 + i % 7, 2, {"i": i}, thread.tid, thread.name)
            )
            events.append(Event("span", "outer", t, t + 40, 2, {}, thread.tid, thread.name))
            t += 50
        w.write(thread, events)
    w.close()


def streamed(path: str) -> int:
    builder = SummaryBuilder()
    trace = read_trace(path, sink=builder)
    builder.finish(trace.stats, trace.losses)
    return trace.shown_events


def whole(path: str) -> int:
    return len(read_trace(path).events)


def peak(read: object, path: str) -> int:
    tracemalloc.start()
    try:
        read(path)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def seconds(read: object, path: str, repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        with gc_off():
            t0 = time.perf_counter()
            read(path)  # type: ignore[operator]
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        sizes = (SPANS, 4 * SPANS)
        paths = []
        for n in sizes:
            path = os.path.join(d, f"t{n}.perfetto-trace")
            write(path, n)
            paths.append(path)
            assert streamed(path) == whole(path) == n  # (nothing lost either way)
        print(f"reading traces of {sizes[0]:,} and {sizes[1]:,} spans ({THREADS} threads, nested)")
        mem = {
            name: [peak(fn, p) / 1e6 for p in paths]
            for name, fn in (("streamed", streamed), ("whole", whole))
        }
        for name in ("streamed", "whole"):
            small, large = mem[name]
            growth = large / small
            print(
                f"  {name:<9} peak memory {small:8.1f} MB -> {large:8.1f} MB  (x{growth:.2f}, 4x the spans)"
            )
        share = mem["streamed"][1] / mem["whole"][1]
        print(f"  streamed / whole at {sizes[1]:,} spans: {share:.3f}x the memory")
        t_stream = seconds(streamed, paths[1])
        t_whole = seconds(whole, paths[1])
        per = 1e6 / (2 * sizes[1])
        print(
            f"  time at {sizes[1]:,} spans: streamed {t_stream:.2f} s ({t_stream * per:.1f} us/event), "
            f"whole {t_whole:.2f} s ({t_whole * per:.1f} us/event): ratio {t_whole / t_stream:.2f}x"
        )


if __name__ == "__main__":
    main()
