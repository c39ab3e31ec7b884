"""Quick start: record a few spans, counters and a failure, write a Perfetto trace, print trace lines.

    python examples/quickstart.py [trace.perfetto-trace]

Open the trace in https://ui.perfetto.dev (Open trace file).
"""

from __future__ import annotations

import sys
import threading
import time

import tracebridge
from tracebridge.sinks.lines import format_event


@tracebridge.traced(level=2)
def load_config(path: str) -> dict[str, str]:
    with tracebridge.span("read", level=2, path=path, category="io"):
        time.sleep(0.002)
    return {"threads": "2"}


def worker(n: int) -> None:
    for i in range(3):
        with tracebridge.span("task", level=2, worker=n, item=i) as s:
            time.sleep(0.001 * (i + 1))
            s.set(done=True)
        tracebridge.counter("items_done", i + 1, unit="count")


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "quickstart.perfetto-trace"
    tracebridge.start(level=2, output=path)
    with tracebridge.span("main", level=1):
        load_config("app.toml")
        threads = [threading.Thread(target=worker, args=(n,), name=f"worker-{n}") for n in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        try:
            with tracebridge.span("connect", level=1, host="db.internal", password="hunter2"):
                raise TimeoutError("db.internal:5432 did not answer")
        except TimeoutError:
            pass
    session = tracebridge.stop()
    for ev in tracebridge.read(path):
        if ev.kind == "span":
            print(format_event(ev, include_thread=True))
    print(f"\n{session.stats.total_recorded} events in {session.path}; open it in https://ui.perfetto.dev")


if __name__ == "__main__":
    main()
