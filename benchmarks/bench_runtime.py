"""What ``configure(runtime=True)`` costs: the writer's rounds, the collector's callback, the hot path.

(r1) a writer round's extra time for sampling the counters and writing them (eight samples into the
     Perfetto file): ``flush()`` rounds with a runtime source that samples every round, against the same
     rounds with it detached, in one session; and the sampler alone (reading ``/proc/self``, ``gc``);
(r2) the collector's callback per collection: a ``gc.collect(0)`` with the callback registered against
     the same without it, and the callback's own two calls; then an allocation-heavy loop (1,400 young
     collections a million objects) end to end with ``runtime=True`` against ``runtime=False``: with
     the default ``gc_min_pause`` (1 ms: the young collections are not slices) and with every pause a
     slice (``gc_min_pause=0``);
(r3) the application's thread: a ``with span()`` loop with ``runtime=True`` against ``runtime=False``
     (collector off while timing, as every bench here): the counters cost it nothing.

Run: python benchmarks/bench_runtime.py [--quick]
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
import time

from _timing import gc_off, on_both_paths, per_op_ns, row

import tracebridge
from tracebridge._recorder import runtime_metrics
from tracebridge._recorder.runtime_metrics import GcPauses, ProcessSampler

QUICK = "--quick" in sys.argv
ROUNDS = 200 if QUICK else 1000
OBJECTS = 300_000 if QUICK else 1_000_000
SPANS = 100_000 if QUICK else 300_000
REPEAT = 3 if QUICK else 5


def flush_rounds(path: str, sampling: bool) -> float:
    """Best of REPEAT: microseconds per ``flush()`` round, the runtime source sampling each round or
    detached."""
    tracebridge.configure(runtime=True)
    session = tracebridge.start(level=2, output=path)
    try:
        source = runtime_metrics.source_of(session)
        assert source is not None
        source.min_interval_ns = 0
        if not sampling:
            runtime_metrics.detach(session)
        best = float("inf")
        for _ in range(REPEAT):
            with gc_off():
                t0 = time.perf_counter_ns()
                for _ in range(ROUNDS):
                    tracebridge.flush()
                best = min(best, (time.perf_counter_ns() - t0) / ROUNDS / 1000)
    finally:
        tracebridge.stop()
        tracebridge.configure(runtime=False)
    counters = sum(1 for e in tracebridge.read(path) if e.kind == "counter")
    assert (counters > ROUNDS) == sampling, counters
    return best


def sampler_us() -> float:
    sampler = ProcessSampler(runtime_metrics._proc_dir())

    def run(n: int) -> None:
        for _ in range(n):
            sampler.sample()

    return per_op_ns(run, ROUNDS) / 1000


def collect_young_us(with_callback: bool) -> float:
    watch = GcPauses()
    if with_callback:
        watch.install()
    try:
        best = float("inf")
        for _ in range(REPEAT):
            t0 = time.perf_counter_ns()
            for _ in range(ROUNDS):
                gc.collect(0)
            best = min(best, (time.perf_counter_ns() - t0) / ROUNDS / 1000)
            watch.take()
        return best
    finally:
        watch.remove()


def callback_pair_ns() -> float:
    watch = GcPauses(capacity=1 << 30)
    info = {"generation": 0, "collected": 0, "uncollectable": 0}

    def run(n: int) -> None:
        for _ in range(n):
            watch.callback("start", info)
            watch.callback("stop", info)
        watch.take()

    return per_op_ns(run, 100_000)


def allocations(path: str) -> dict[str, tuple[float, int]]:
    """Best of REPEAT (the modes taking turns): seconds to build OBJECTS dicts (the collector on) until
    ``stop()`` has written everything, and the pause slices the trace holds, per mode."""
    modes = {
        "off": {"runtime": False},
        "on": {"runtime": True},
        "every pause": {"runtime": True, "gc_min_pause": 0},
    }
    best = dict.fromkeys(modes, float("inf"))
    slices = dict.fromkeys(modes, 0)
    for _ in range(REPEAT):
        for mode, options in modes.items():
            tracebridge.configure(**options)
            gc.collect()
            t0 = time.perf_counter()
            tracebridge.start(level=2, output=path)
            built = [{"i": i} for i in range(OBJECTS)]
            tracebridge.stop()
            best[mode] = min(best[mode], time.perf_counter() - t0)
            del built
            tracebridge.configure(runtime=False, gc_min_pause="1ms")
            slices[mode] = sum(1 for e in tracebridge.read(path) if e.track == "GC")
    return {mode: (best[mode], slices[mode]) for mode in modes}


def spans_ns(path: str, runtime: bool) -> float:
    tracebridge.configure(runtime=runtime)
    tracebridge.start(level=2, output=path)
    try:

        def run(n: int) -> None:
            for _ in range(n):
                with tracebridge.span("work"):
                    pass

        return per_op_ns(run, SPANS, repeat=REPEAT)
    finally:
        tracebridge.stop()
        tracebridge.configure(runtime=False)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.perfetto-trace")
        on = flush_rounds(path, sampling=True)
        off = flush_rounds(path, sampling=False)
        print(f"(r1) writer round: {on:.1f} us sampling, {off:.1f} us detached: {on - off:+.1f} us a round")
        print(f"     the sampler alone: {sampler_us():.1f} us a sample")
        with_cb, without = collect_young_us(True), collect_young_us(False)
        print(
            f"(r2) gc.collect(0): {with_cb:.2f} us with the callback, {without:.2f} us without:"
            f" {with_cb - without:+.2f} us a collection (its two calls: {callback_pair_ns():.0f} ns)"
        )
        found = allocations(path)
        t_off = found["off"][0]
        for mode in ("on", "every pause"):
            t, slices = found[mode]
            print(
                f"     {OBJECTS:,} dicts built, end to end, runtime=True ({mode}): {t * 1000:.0f} ms,"
                f" {slices:,} pause slices, against {t_off * 1000:.0f} ms off ({t / t_off:.3f}x)"
            )
        on_ns, off_ns = float("inf"), float("inf")
        for _ in range(2):  # (taking turns: the machine's load moves)
            off_ns = min(off_ns, spans_ns(path, False))
            on_ns = min(on_ns, spans_ns(path, True))
        print("(r3) " + row("with span() on the app thread, runtime on vs off", on_ns, off_ns, "1.0x"))


if __name__ == "__main__":
    on_both_paths(main)
