"""logger.exception(...) inside a span: the span fails with the back-trace, in the log and in the trace.

    python examples/exception_in_span.py [failure.perfetto-trace]

The code handles the exception and carries on; the log shows the error record (with Python's
traceback) and the failed span's trace line (with the span's back-trace, outermost frame first); the
Perfetto trace has the span marked failed (its callstack is the back-trace) and the error record inside
it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys

import tracebridge

log = logging.getLogger("billing")


def parse_invoice(text: str) -> dict[str, object]:
    return dict(json.loads(text))


def import_invoices(texts: list[str]) -> int:
    imported = 0
    for n, text in enumerate(texts):
        with tracebridge.span("import_invoice", level=2, index=n):
            try:
                parse_invoice(text)
                imported += 1
            except ValueError:
                log.exception("invoice %d is not valid JSON; skipped", n)
    return imported


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "failure.perfetto-trace"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "filters": {
                "context": {"()": "tracebridge.logging.TraceContextFilter"},
                "trace_lines": {"()": "tracebridge.logging.TraceLines"},
            },
            "formatters": {
                "lines": {
                    "()": "tracebridge.logging.TraceFormatter",
                    "fmt": "%(levelname)s %(span_name)s %(message)s",
                },
            },
            "handlers": {
                "console": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stdout",
                    "formatter": "lines",
                    "filters": ["context", "trace_lines"],
                },
                "perfetto": {"class": "tracebridge.logging.PerfettoHandler", "filename": path},
            },
            "root": {"level": "INFO", "handlers": ["console", "perfetto"]},
        }
    )
    imported = import_invoices(['{"total": 12}', '{"total": 3', '{"total": 7}'])
    tracebridge.stop()
    failed = [e for e in tracebridge.read(path) if e.kind == "span" and e.error is not None]
    for ev in failed:
        print(f"\nin {path}: {ev.name} {ev.metadata} failed with {ev.error.type}: {ev.error.message}")
    print(f"{imported} of 3 invoices imported")


if __name__ == "__main__":
    main()
