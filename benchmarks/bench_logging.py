"""The logging bridge against plain stdlib logging, measured in the same run.

(f) A log line through TraceContextFilter + TraceFormatter against the same line through a plain
    logging.Formatter without the filter, both to a StreamHandler on /dev/null (target: at most 1.3x
    dearer), outside any span and inside a recorded span (the ids are formatted then).
(g) PerfettoHandler against a StreamHandler writing the same record to /dev/null (target: no slower, end
    to end): the cost on the application's thread (``emit`` queues the record), and the cost including the
    writer thread's encoding and file writes for the same records (nothing dropped: checked). The anchor
    runs between our runs and everything is timed with the garbage collector off.

Run: python benchmarks/bench_logging.py [--quick]
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from _timing import gc_off, on_both_paths, per_op_ns, row

import tracebridge
from tracebridge.logging import PerfettoHandler, TraceContextFilter, TraceFormatter

QUICK = "--quick" in sys.argv
N = 20_000 if QUICK else 100_000
REPEAT = 3 if QUICK else 7

PLAIN = "%(asctime)s %(levelname)s %(name)s %(message)s"
WITH_IDS = "%(asctime)s %(levelname)s %(name)s [%(trace_id)s/%(span_id)s] %(message)s"


def make_logger(name: str, handler: logging.Handler) -> logging.Logger:
    log = logging.getLogger(name)
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def devnull_handler(formatter: logging.Formatter) -> logging.StreamHandler:  # type: ignore[type-arg]
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 (closed at exit)
    handler.setFormatter(formatter)
    return handler


def log_n(log: logging.Logger) -> object:
    def run(n: int) -> None:
        info = log.info
        for i in range(n):
            info("order %d loaded from %s", i, "db")

    return run


def context_lines() -> None:
    print("(f) a log line with trace context vs the same line without (StreamHandler to /dev/null)")
    plain = log_n(make_logger("bench.plain", devnull_handler(logging.Formatter(PLAIN))))
    handler = devnull_handler(TraceFormatter(WITH_IDS))
    handler.addFilter(TraceContextFilter())
    traced = log_n(make_logger("bench.traced", handler))
    base = per_op_ns(plain, N, REPEAT)  # type: ignore[arg-type]
    ours = per_op_ns(traced, N, REPEAT)  # type: ignore[arg-type]
    print(dearer("outside a span: filter + TraceFormatter", ours, base, "<= 1.3x"))
    tracebridge.start(level=2)
    try:
        with tracebridge.span("request", level=2):
            base_in = per_op_ns(plain, N, REPEAT)  # type: ignore[arg-type]
            ours_in = per_op_ns(traced, N, REPEAT)  # type: ignore[arg-type]
    finally:
        tracebridge.stop()
    print(dearer("inside a recorded span: filter + TraceFormatter", ours_in, base_in, "<= 1.3x"))


def dearer(label: str, ours: float, plain: float, target: str) -> str:
    ratio = ours / plain
    return f"  {label:<58} {ours:10.1f} vs {plain:10.1f} ns/line  {ratio:6.2f}x as dear  (target: {target})"


def perfetto_handler(tmp: Path) -> None:
    print("(g) PerfettoHandler vs StreamHandler writing the same record to /dev/null")
    stream = log_n(make_logger("bench.stream", devnull_handler(logging.Formatter(PLAIN))))
    base = float("inf")
    for label, interval, target in (
        ("PerfettoHandler, app thread (writer waits till stop)", 3600.0, "no slower"),
        ("PerfettoHandler, app thread (writer running, GIL shared)", 0.1, "reported"),
    ):
        app_best = total_best = float("inf")
        for k in range(REPEAT):  # (the anchor between our runs: the machine's drift hits both alike)
            base = min(base, per_op_ns(stream, N, 1))  # type: ignore[arg-type]
            path = tmp / f"log{interval}-{k}.perfetto-trace"
            tracebridge.configure(thread_buffer=2 * N, flush_interval=interval)  # no drops: measure emit
            handler = PerfettoHandler(path)
            log = make_logger(f"bench.perfetto{interval}-{k}", handler)
            with gc_off():  # (as the anchor is timed)
                t0 = time.perf_counter_ns()
                log_n(log)(N)  # type: ignore[operator]
                t1 = time.perf_counter_ns()
                session = tracebridge.stop()
                t2 = time.perf_counter_ns()
            handler.close()
            assert session.stats.total_dropped == 0, session.stats
            app_best = min(app_best, (t1 - t0) / N)
            total_best = min(total_best, (t2 - t0) / N)
        print(row(label, app_best, base, target, "ns/rec"))
    print(
        row(
            "PerfettoHandler, END TO END (writer's encoding and I/O)", total_best, base, "no slower", "ns/rec"
        )
    )
    tracebridge.configure(flush_interval=0.1)


def main() -> None:
    print(f"python {sys.version.split()[0]}, N={N}, best of {REPEAT}; ratio = anchor / ours unless noted")
    context_lines()
    with tempfile.TemporaryDirectory() as tmp:
        perfetto_handler(Path(tmp))


if __name__ == "__main__":
    on_both_paths(main)
