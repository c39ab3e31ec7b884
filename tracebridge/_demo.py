"""``tracebridge demo``: a small program that exercises the span API and writes a real trace."""

from __future__ import annotations

import asyncio
import gc
import queue
import random
import threading
import time

import tracebridge

from ._accel import describe
from ._model import GC_CATEGORY, Event
from .analysis import render, summarize
from .sinks.lines import format_duration, format_event


@tracebridge.traced(level=2)
def load_config(path: str) -> dict[str, str]:
    with tracebridge.span("parse", level=2, path=path, category="io"):
        time.sleep(0.001)
    with tracebridge.span("validate#rules=12,strict=true#", level=2):
        time.sleep(0.0005)
    return {"db": "sqlite://"}


def query(sql: str, rows: int) -> None:
    with tracebridge.span("db.query", level=2, category="db", sql=sql) as s:
        time.sleep(0.0002 * rows)
        s.set(rows=rows)


def worker(jobs: queue.Queue[tuple[int, int] | None], download: int) -> None:
    while True:
        job = jobs.get()
        if job is None:
            break
        n, flow_id = job
        with tracebridge.span("handle_job", level=2, job=n, terminating_flows=[flow_id]):
            query("SELECT * FROM items WHERE job = ?", rows=random.randint(1, 5))
            tracebridge.counter("queue_depth", jobs.qsize(), unit="count")
    tracebridge.activity_end(download, bytes=48_213)


def flaky() -> None:
    with tracebridge.span("charge_card", level=1, amount=12.5, api_token="s3cr3t"):
        raise ConnectionError("payment gateway timed out")


async def fetch(name: str, delay: float) -> None:
    with tracebridge.span("fetch", level=2, url=f"https://example.test/{name}"):
        await asyncio.sleep(delay)


async def crawl() -> None:
    await asyncio.gather(fetch("a", 0.004), fetch("b", 0.002), fetch("c", 0.003))


def gpu() -> None:
    for i in range(3):
        with tracebridge.span("kernel", level=2, track="GPU Compute", index=i):
            time.sleep(0.0003)


class Node:
    def __init__(self, parent: Node | None) -> None:
        self.parent = parent
        self.children: list[Node] = []


def build_tree(size: int) -> None:
    with tracebridge.span("build_tree", level=2, nodes=size):
        root = Node(None)
        for _ in range(size):
            root.children.append(Node(root))  # (each child points back: cycles, garbage only to the GC)
        del root
        gc.collect()  # a full collection: a pause on the "GC" track


def workload() -> None:
    with tracebridge.span("main", level=1):
        load_config("app.toml")
        download = tracebridge.activity_start("download", level=2, url="https://example.test/data.bin")
        jobs: queue.Queue[tuple[int, int] | None] = queue.Queue()
        t = threading.Thread(target=worker, args=(jobs, download), name="worker-1")
        t.start()
        for n in range(6):
            fid = tracebridge.flow()
            with tracebridge.span("enqueue", level=2, job=n, flows=[fid]):
                jobs.put((n, fid))
        jobs.put(None)
        t.join()
        try:
            flaky()
        except ConnectionError:
            tracebridge.instant("payment_failed", level=1, retry=True)
        asyncio.run(crawl())
        gpu()
        build_tree(20_000)
        with tracebridge.span("debug_dump", level=3):  # verbose: not recorded at level 2
            pass


def runtime_line(events: list[Event]) -> str:
    """What ``runtime=True`` recorded, in one line: the last value of each process counter and the
    collector's pauses."""
    last = {e.name: e.value for e in sorted(events, key=lambda e: e.start_ns) if e.kind == "counter"}
    parts = []
    if "mem.rss" in last:
        parts.append(f"RSS {float(last['mem.rss'] or 0) / 2**20:.1f} MiB")
    for key, label in (("cpu.percent", "CPU"), ("gc.percent", "GC")):
        if key in last:
            parts.append(f"{label} {last[key]:.0f}%")
    parts += [
        f"{last[k]} {label}" for k, label in (("threads", "threads"), ("fds", "open files")) if k in last
    ]
    pauses = [e for e in events if GC_CATEGORY in e.categories and e.end_ns is not None]
    text = "Runtime: " + ", ".join(parts) + f"; {len(pauses)} GC pauses"
    if pauses:
        longest = max(pauses, key=lambda e: e.duration_ns or 0)
        md = longest.metadata
        text += (
            f", the longest {format_duration(longest.duration_ns or 0)} (generation {md.get('generation')},"
            f" {md.get('collected', 0):,} objects collected)"
        )
    return text


def run_demo(output: str, json_output: str | None = None) -> int:
    before = tracebridge.configure()
    # The process's counters and the collector's pauses: here every pause, even those of microseconds
    # (by default pauses under 1 ms only count in GC %).
    tracebridge.configure(runtime=True, gc_min_pause=0)
    try:
        tracebridge.start(level=2, output=output)
        workload()
        session = tracebridge.stop()
    finally:
        tracebridge.configure(runtime=before.runtime, gc_min_pause=before.gc_min_pause)
    events = tracebridge.read(output)
    print(f"Recorded {len(events)} events into {session.path} ({describe()}). Trace lines:\n")
    for ev in sorted(events, key=lambda e: e.end_ns if e.end_ns is not None else e.start_ns):
        if ev.kind in ("span", "instant", "activity") and GC_CATEGORY not in ev.categories:
            print(format_event(ev, include_thread=ev.thread_name != "MainThread"))
    print()
    print(runtime_line(events))
    print()
    print(render(summarize(events, session.stats), top=10))
    if json_output:
        from .reading import read_trace
        from .sinks import write_trace

        write_trace(read_trace(output), json_output)
        print(f"\nAlso wrote Chrome JSON: {json_output}")
    print(
        f"\nOpen it in the Perfetto UI with\n  tracebridge open {output}\nor run\n"
        f"  tracebridge summary {output}\n  tracebridge validate {output}"
    )
    return 0
