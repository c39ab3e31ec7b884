"""What scrubbing credentials costs, END TO END (the writer's conversion, encoding and file writes inside
the timing, nothing dropped: checked): each case recorded with scrubbing on (the default) and, as its
anchor in the same run, with ``configure(scrub=None)``. The ratio is off / on: 1.00x means free.

- (s1) a span with a plain annotation: nothing in it may hold a credential (the quick test only);
- (s2) a span whose annotation is a URL with a query (``=``: the writer looks closer, finds nothing);
- (s3) the same URL carrying ``?token=...``: scrubbed;
- (s4) ``logger.info("user=%s logged in", ...)`` to a ``PerfettoHandler`` (log text with ``=``).

Scrubbing runs on the writer thread, so the application's thread pays nothing for it (the compiled path
tests the text in C; the pure-Python path with one regular expression); these figures say what the
writer's share costs the program in all.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))

from _timing import on_both_paths, per_op_ns, row

import tracebridge
from tracebridge.logging import PerfettoHandler

N = 20_000 if "--quick" in sys.argv else 100_000
REPEAT = 5


def spans(output: str, scrub: bool, **metadata: object) -> float:
    def run(n: int) -> None:
        for _ in range(n):
            with tracebridge.span("load", level=2, **metadata):
                pass
        tracebridge.flush()

    tracebridge.configure(on_full="block", scrub=tracebridge.Config().scrub if scrub else None)
    tracebridge.start(level=2, output=output)
    cost = per_op_ns(run, N, REPEAT)
    session = tracebridge.stop()
    assert session.stats.total_dropped == 0, session.stats
    assert (session.stats.scrubbed > 0) == (scrub and "token" in str(metadata)), session.stats
    return cost


def logs(path: str, scrub: bool) -> float:
    log = logging.getLogger("bench.scrub")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = PerfettoHandler(path)
    log.addHandler(handler)

    def run(n: int) -> None:
        for _ in range(n):
            log.info("user=%s logged in", "bob")
        tracebridge.flush()

    tracebridge.configure(on_full="block", scrub=tracebridge.Config().scrub if scrub else None)
    tracebridge.start(level=2, output=path)
    try:
        cost = per_op_ns(run, N, REPEAT)
    finally:
        session = tracebridge.stop()
        log.removeHandler(handler)
        handler.close()
    assert session.stats.total_dropped == 0, session.stats
    return cost


def main() -> None:
    cases = [
        ("(s1) span, annotation path=app.toml", {"path": "app.toml"}),
        ("(s2) span, annotation a URL with a query", {"url": "https://api.example.com/items?page=2&size=50"}),
        (
            "(s3) span, annotation a URL with ?token=",
            {"url": "https://api.example.com/items?token=abc123&page=2"},
        ),
    ]
    results = []
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bench.perfetto-trace")
        for label, md in cases:
            off = spans(path, False, **md)
            on = spans(path, True, **md)
            results.append((label, on, off))
        off = logs(path, False)
        on = logs(path, True)
        results.append(("(s4) logger.info('user=%s logged in') to PerfettoHandler", on, off))
    tracebridge.configure(scrub=tracebridge.Config().scrub)
    print(f"scrubbing, END TO END (N={N}, best of {REPEAT}; Python {sys.version.split()[0]})")
    print("  (ours: scrubbing on; anchor: scrub=None, the same case in the same run; ratio 1.00x is free)")
    for label, on, off in results:
        print(row(label, on, off, "reported"))


if __name__ == "__main__":
    on_both_paths(main)
