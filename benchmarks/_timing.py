"""Timing helpers shared by the benchmark scripts: best-of-N per-operation costs, printed as ratios."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator


def per_op_ns(fn: Callable[[int], None], n: int, repeat: int = 7) -> float:
    """Best of ``repeat`` runs of ``fn(n)``, in nanoseconds per operation (GC off while timing)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            fn(n)
            t1 = time.perf_counter_ns()
        finally:
            gc.enable()
        best = min(best, (t1 - t0) / n)
    return best


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    """Collect, then keep the garbage collector off while timing (as :func:`per_op_ns` does)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def row(label: str, ours: float, anchor: float, target: str, unit: str = "ns/op") -> str:
    ratio = anchor / ours if ours else float("inf")
    return f"  {label:<58} {ours:10.1f} vs {anchor:10.1f} {unit:<8} ratio {ratio:6.2f}x  (target: {target})"


def on_both_paths(main: Callable[[], None]) -> None:
    """Run ``main`` on the path this process runs (the compiled accelerator, when it is built), then
    once more in a fresh process on the pure-Python path (``TRACEBRIDGE_PURE_PYTHON=1``): a span's
    class, and so its path, is fixed when tracebridge is imported."""
    import os
    import subprocess
    import sys

    import tracebridge
    from tracebridge._accel import describe

    print(f"== {describe()} ==")
    main()
    if tracebridge.accelerated:
        sys.stdout.flush()
        env = {**os.environ, "TRACEBRIDGE_PURE_PYTHON": "1"}
        subprocess.run([sys.executable, *sys.argv], env=env, check=True)
