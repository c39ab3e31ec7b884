"""Writer throughput and trace size, against the anchors measured in the same run.

(c) packets per second of our Perfetto writer vs the ``perfetto`` package's StreamingTraceProtoBuilder
    writing the same packets (same fields, interning and delta timestamps): target >= 2x faster;
(d) bytes per event of our Perfetto trace vs our Chrome JSON of the same events: target >= 4x smaller.

Workload: 100k spans on 4 threads with 50 names, nested three deep.
Run: python benchmarks/bench_writer.py [--quick]
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator

from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

from tracebridge._accel import speedups
from tracebridge._model import Event, ThreadInfo
from tracebridge.sinks.chrome import ChromeJsonWriter
from tracebridge.sinks.perfetto import writer as perfetto_writer
from tracebridge.sinks.perfetto.writer import PerfettoWriter

QUICK = "--quick" in sys.argv
SPANS = 20_000 if QUICK else 100_000
THREADS = 4
NAMES = [f"op_{i:02d}" for i in range(50)]
REPEAT = 3 if QUICK else 5


def workload(with_metadata: bool) -> dict[ThreadInfo, list[Event]]:
    """Per thread, spans in the order the recorder hands them over (at their end): a root with two
    children, one of which has a child of its own."""
    rng = random.Random(7)
    out: dict[ThreadInfo, list[Event]] = {}
    for t in range(THREADS):
        info = ThreadInfo(os.getpid(), 1000 + t, f"worker-{t}")
        events: list[Event] = []
        ts = 1_000_000_000
        for _ in range(SPANS // THREADS // 4):
            root_start = ts
            ts += rng.randint(200, 2000)
            c1 = ts
            ts += rng.randint(200, 2000)
            g = ts
            ts += rng.randint(200, 2000)
            g_end = ts
            ts += rng.randint(200, 2000)
            c1_end = ts
            ts += rng.randint(200, 2000)
            c2 = ts
            ts += rng.randint(200, 2000)
            c2_end = ts
            ts += rng.randint(200, 2000)
            for start, end in ((g, g_end), (c1, c1_end), (c2, c2_end), (root_start, ts)):
                md = {"rows": rng.randint(0, 500), "table": "items"} if with_metadata else {}
                events.append(Event("span", rng.choice(NAMES), start, end, 1, md, info.tid, info.name))
            ts += rng.randint(200, 2000)
        out[info] = events
    return out


def ours(path: str, batches: dict[ThreadInfo, list[Event]], compress: bool) -> tuple[float, int]:
    best = float("inf")
    for _ in range(REPEAT):
        w = PerfettoWriter(path, compress=compress)
        t0 = time.perf_counter()
        for info, events in batches.items():
            for i in range(0, len(events), 4096):
                w.write(info, events[i : i + 4096])
        best = min(best, time.perf_counter() - t0)
        w.close()
    return best, os.path.getsize(path)


def anchor(path: str, batches: dict[ThreadInfo, list[Event]]) -> float:
    """The same packets through the official generated classes and StreamingTraceProtoBuilder."""
    best = float("inf")
    for _ in range(REPEAT):
        with open(path, "wb") as f:
            b = StreamingTraceProtoBuilder(f)
            t0 = time.perf_counter()
            for seq, (_info, events) in enumerate(batches.items(), start=2):
                items = []
                for idx, ev in enumerate(events):
                    items.append((ev.start_ns, 1, -idx, 1, ev))
                    items.append((ev.end_ns, 0, idx, 2, ev))
                items.sort(key=lambda it: it[:3])
                names: dict[str, int] = {}
                keys: dict[str, int] = {}
                last = 0
                for ts, _, _, phase, ev in items:
                    p = b.create_packet()
                    p.timestamp = ts - last
                    last = ts
                    p.trusted_packet_sequence_id = seq
                    p.sequence_flags = 2
                    te = p.track_event
                    te.type = phase
                    if phase == 1:
                        iid = names.get(ev.name)
                        if iid is None:
                            iid = names[ev.name] = len(names) + 1
                            p.interned_data.event_names.add(iid=iid, name=ev.name)
                        te.name_iid = iid
                        for k, v in ev.metadata.items():
                            kid = keys.get(k)
                            if kid is None:
                                kid = keys[k] = len(keys) + 1
                                p.interned_data.debug_annotation_names.add(iid=kid, name=k)
                            a = te.debug_annotations.add()
                            a.name_iid = kid
                            if isinstance(v, int):
                                a.int_value = v
                            else:
                                a.string_value = v
                    b.write_packet(p)
            best = min(best, time.perf_counter() - t0)
    return best


def paths() -> list[tuple[str, bool]]:
    """The paths to measure: the compiled accelerator (when built) and the pure-Python one."""
    return [("compiled", True), ("pure Python", False)] if speedups is not None else [("pure Python", False)]


@contextlib.contextmanager
def on_path(compiled: bool) -> Iterator[None]:
    saved = perfetto_writer.speedups
    perfetto_writer.speedups = saved if compiled else None
    try:
        yield
    finally:
        perfetto_writer.speedups = saved


def chrome_size(path: str, batches: dict[ThreadInfo, list[Event]]) -> int:
    w = ChromeJsonWriter(path)
    for info, events in batches.items():
        w.write(info, events)
    w.close()
    return os.path.getsize(path)


def main() -> None:
    print(
        f"tracebridge writer benchmarks ({SPANS} spans, {THREADS} threads, {len(NAMES)} names; "
        f"best of {REPEAT})"
    )
    with tempfile.TemporaryDirectory() as d:
        for label, with_md in (("no metadata", False), ("two annotations", True)):
            batches = workload(with_md)
            events = sum(len(v) for v in batches.values())
            packets = 2 * events
            t_anchor = anchor(os.path.join(d, "anchor.perfetto-trace"), batches)
            json_size = chrome_size(os.path.join(d, "t.json"), batches)
            print(f"[{label}]")
            for compress in (True, False):
                how = "compressed (default)" if compress else "uncompressed"
                for path_label, compiled in paths():
                    with on_path(compiled):
                        t_ours, size = ours(os.path.join(d, "t.perfetto-trace"), batches, compress)
                    theirs = f"StreamingTraceProtoBuilder {packets / t_anchor:,.0f}"
                    rates = f"ours {packets / t_ours:,.0f} vs {theirs}"
                    print(
                        f"  (c) packets/s, {how}, {path_label}: {rates}  ratio {t_anchor / t_ours:.2f}x"
                        "  (target >= 2x)"
                    )
                print(
                    f"  (d) bytes/event, {how}: Perfetto {size / events:.1f} ({size / 1e6:.2f} MB) vs Chrome "
                    f"JSON {json_size / events:.1f} ({json_size / 1e6:.2f} MB)  ratio {json_size / size:.2f}x"
                    "  (target >= 4x)"
                )


if __name__ == "__main__":
    main()
