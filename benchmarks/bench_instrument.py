"""Auto-instrumentation against viztracer, measured in the same run.

(j) Per-call overhead of an instrumented trivial function over a bare call, against viztracer's per-call
    overhead on the same function: recorded calls (target: at most 6x viztracer's), calls under
    min_duration (at most 3x), and calls of a demoted function (at most 1.5x).
(k) Trace bytes per call: our Perfetto file against viztracer's JSON for the same calls (target: at least
    4x smaller).

Run: python benchmarks/bench_instrument.py [--quick]
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from _timing import on_both_paths, per_op_ns, row

import tracebridge
from tracebridge.instrument import DEMOTE_AFTER, _budget, instrument

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
REPEAT = 3 if QUICK else 7

MODULE = textwrap.dedent(
    """
    def work():
        pass

    def calls(n):
        for _ in range(n):
            work()
    """
)


def load(tmp: Path) -> Any:
    (tmp / "bench_target.py").write_text(MODULE)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("bench_target")


def _under_min_duration(target: Any) -> float:
    chunk = DEMOTE_AFTER - 10
    best = float("inf")
    for _ in range(REPEAT):
        total = calls = 0
        gc.collect()
        gc.disable()
        try:
            for _ in range(max(1, N // chunk)):
                _budget.new_generation()
                t0 = time.perf_counter_ns()
                target.calls(chunk)
                total += time.perf_counter_ns() - t0
                calls += chunk
        finally:
            gc.enable()
        best = min(best, total / calls)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        target = load(tmp)
        bare = per_op_ns(target.calls, N, REPEAT)

        handle = instrument("bench_target")
        tracebridge.configure(thread_buffer=N + 10)
        path = tmp / "calls.perfetto-trace"
        tracebridge.start(level=2, output=path)
        ours = min(per_op_ns(target.calls, N, 1) for _ in range(REPEAT) if tracebridge.flush() or True)
        session = tracebridge.stop()
        handle.uninstrument()
        tracebridge.configure(thread_buffer=65536)
        ours_bytes = os.path.getsize(path) / max(1, session.stats.total_recorded)

        # Under min_duration: timed in chunks, each in a fresh generation so that nothing is demoted.
        handle = instrument("bench_target", min_duration="1s")
        tracebridge.start(level=2)
        short = _under_min_duration(target)
        for _ in range(2):
            target.calls(DEMOTE_AFTER + 1)  # work() is demoted now
        assert "bench_target.work" in _budget.demotions
        demoted = per_op_ns(target.calls, N, REPEAT)
        tracebridge.stop()
        handle.uninstrument()

        try:
            from viztracer import VizTracer
        except ImportError:
            print("viztracer is not installed (pip install -e '.[bench]')")
            return
        tracer = VizTracer(verbose=0, tracer_entries=10 * N + 1000)
        tracer.start()
        viz = per_op_ns(target.calls, N, REPEAT)
        tracer.stop()
        tracer.clear()
        tracer.start()
        target.calls(N)
        tracer.stop()
        json_path = tmp / "viz.json"
        tracer.save(str(json_path))
        viz_bytes = os.path.getsize(json_path) / (N + 1)

    print(f"auto-instrumentation (N={N}, best of {REPEAT}; Python {sys.version.split()[0]})")
    print("(j) per-call overhead over a bare call:")
    print(row("instrumented call, recorded, vs viztracer", ours - bare, viz - bare, "<= 6x (ratio >= 0.17)"))
    print(row("call under min_duration vs viztracer", short - bare, viz - bare, "<= 3x (ratio >= 0.33)"))
    print(
        row("call of a demoted function vs viztracer", demoted - bare, viz - bare, "<= 1.5x (ratio >= 0.67)")
    )
    print("(k) trace bytes per call:")
    print(row("Perfetto file vs viztracer JSON", ours_bytes, viz_bytes, ">= 4x smaller", "bytes"))


if __name__ == "__main__":
    on_both_paths(main)
