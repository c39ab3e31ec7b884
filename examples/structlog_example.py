"""tracebridge in a structlog processor chain.

    python examples/structlog_example.py [structlog.perfetto-trace]

Events get the ids of the span they were logged in, floods are rate limited, every event also goes to
the Perfetto trace as a log message on its thread's track, and the renderer prints trace-style lines.
A failure logged with ``log.exception`` keeps its back-trace in the line and in the trace.
"""

from __future__ import annotations

import sys

import structlog

import tracebridge
from tracebridge.structlog import PerfettoProcessor, RateLimitProcessor, TraceLineRenderer, add_trace_context


def charge(log: structlog.typing.FilteringBoundLogger, amount: int) -> None:
    with tracebridge.span("charge", level=2, amount=amount):
        if amount > 100:
            raise ValueError(f"amount {amount} is over the card's limit")
        log.info("charged", amount=amount)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "structlog.perfetto-trace"
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            add_trace_context,
            RateLimitProcessor(per_second=10, burst=2),
            PerfettoProcessor(path),  # starts recording into path (or joins the recording of path)
            TraceLineRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(),
    )
    log = structlog.get_logger().bind(service="payments")
    log.info("starting")
    with tracebridge.span("checkout", level=1, cart=42):
        for amount in (30, 250):
            try:
                charge(log, amount)
            except ValueError:
                log.exception("charge failed", amount=amount)
        for _ in range(10):
            log.warning("retrying")  # two get through, the rest are counted
    session = tracebridge.stop()
    events = tracebridge.read(path)
    failed = next(e for e in events if e.kind == "log" and e.error is not None)
    print(
        f"\n{len(events)} events in {path} ({session.stats.total_dropped} rate limited, counted);"
        f" the failure's back-trace has {len(failed.error.frames)} frames"
    )


if __name__ == "__main__":
    main()
