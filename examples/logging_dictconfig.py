"""tracebridge configured the usual way, with logging.config.dictConfig.

    python examples/logging_dictconfig.py [app.perfetto-trace]

The console gets ordinary log lines with the trace and span ids of the span they were logged in, floods
squashed by a rate limit, and a trace line for every span that ends (slow database calls at WARNING).
The Perfetto file gets the spans and the log records, each on its thread's track inside its span.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import time
from typing import Any

import tracebridge


def logging_config(trace_file: str) -> dict[str, Any]:
    """The dictConfig of this example (the README shows the same as YAML)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": "tracebridge.logging.TraceContextFilter"},
            "flood": {"()": "tracebridge.logging.RateLimitFilter", "per_second": 5, "burst": 3},
            "trace_lines": {
                "()": "tracebridge.logging.TraceLines",
                "slow": {"db.*": "5ms", "*": "100ms"},
            },
        },
        "formatters": {
            "console": {
                "()": "tracebridge.logging.TraceFormatter",
                "fmt": "%(levelname)-7s %(name)-17s [%(trace_id).8s/%(span_id).8s] %(message)s",
            },
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "console",
                "filters": ["context", "flood", "trace_lines"],
            },
            "perfetto": {"class": "tracebridge.logging.PerfettoHandler", "filename": trace_file},
        },
        "root": {"level": "INFO", "handlers": ["console", "perfetto"]},
    }


log = logging.getLogger("shop.orders")


@tracebridge.traced(level=2)
def load_order(order_id: int) -> dict[str, int]:
    with tracebridge.span("db.query", level=2, table="orders", id=order_id):
        time.sleep(0.008 if order_id == 2 else 0.001)  # order 2 is slow: a [SLOW] line
    log.info("loaded order %d", order_id)
    return {"id": order_id, "items": order_id * 2}


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "logging_dictconfig.perfetto-trace"
    logging.config.dictConfig(logging_config(path))
    log.info("outside any span: empty ids")
    with tracebridge.span("handle_request", level=1, route="/orders") as request:
        for order_id in (1, 2, 3):
            load_order(order_id)
        for _ in range(20):
            log.warning("inventory service slow to answer")  # a flood: three lines, then counted
        request.set(orders=3)
    session = tracebridge.stop()
    logging.shutdown()
    events = tracebridge.read(path)
    spans = sum(e.kind == "span" for e in events)
    logs = sum(e.kind == "log" for e in events)
    print(f"\n{spans} spans and {logs} log records in {session.path}; open it in https://ui.perfetto.dev")


if __name__ == "__main__":
    main()
