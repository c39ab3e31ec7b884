"""Our Perfetto traces through Perfetto's own importer, trace_processor_shell.

No package registry ships trace_processor_shell (it downloads itself from Google's storage, which CI
cannot reach), so these tests run only where ``TRACEBRIDGE_TRACE_PROCESSOR`` names a binary, for example
one built from google/perfetto's sources. They check what the UI would show: no import errors, and the
same slices, counters, log messages and flows that ``tracebridge.read`` finds.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracebridge._model import ThreadInfo
from tracebridge.reading import read_trace
from tracebridge.sinks.perfetto.writer import PerfettoWriter

from strategies import thread_events

SHELL = os.environ.get("TRACEBRIDGE_TRACE_PROCESSOR", "")
pytestmark = pytest.mark.skipif(
    not (SHELL and os.access(SHELL, os.X_OK)),
    reason="set TRACEBRIDGE_TRACE_PROCESSOR to a trace_processor_shell",
)

PROBLEMS = "select name, value from stats where value > 0 and severity in ('error', 'data_loss')"
SLICES = "select hex(cast(name as blob)), ts, dur from slice where category is not 'tracebridge.stats'"
COUNTS = (
    "select (select count(*) from counter), (select count(*) from android_logs), (select count(*) from flow),"
    " (select count(*) from thread where tid != 0)"
)


def query(path: Path, sql: str, tmp: Path) -> list[list[str]]:
    q = tmp / "q.sql"
    q.write_text(sql + ";\n")
    result = subprocess.run(
        [SHELL, "--query-file", str(q), str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Unreachable" not in result.stderr and "FATAL" not in result.stderr, result.stderr[-2000:]
    return list(csv.reader(io.StringIO(result.stdout)))[1:]


def check(path: Path, tmp: Path) -> None:
    assert query(path, PROBLEMS, tmp) == []
    events = read_trace(path).events
    theirs = sorted(
        (bytes.fromhex(h).decode() if h != "[NULL]" else "", int(ts), int(dur))
        for h, ts, dur in query(path, SLICES, tmp)
    )
    ours = sorted(
        (e.name, e.start_ns, -1 if e.end_ns is None else e.end_ns - e.start_ns)
        for e in events
        if e.kind != "counter"
    )
    assert theirs == ours
    counters, logs, _flows, _threads = map(int, query(path, COUNTS, tmp)[0])
    assert counters == sum(e.kind == "counter" for e in events)
    assert logs == sum(e.kind == "log" for e in events)


def test_demo_trace(tmp_path: Path) -> None:
    out = tmp_path / "demo.perfetto-trace"
    subprocess.run(
        [sys.executable, "-m", "tracebridge", "demo", "-o", str(out)], check=True, capture_output=True
    )
    check(out, tmp_path)
    _, _, flows, threads = map(int, query(out, COUNTS, tmp_path)[0])
    assert flows == 6 and threads == 3  # (the main thread, the worker, and the writer that sampled counters)


@settings(max_examples=30, deadline=None)
@given(st.data(), st.booleans())
def test_random_traces(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, compress: bool) -> None:
    batches = []
    for i in range(data.draw(st.integers(1, 3))):
        thread = ThreadInfo(os.getpid(), 1000 + i, f"t{i}")
        events = data.draw(thread_events(thread.tid, thread.name, data.draw(st.integers(10_000, 10**12))))
        cut = data.draw(st.integers(0, len(events)))
        batches += [(thread, events[:cut]), (thread, events[cut:])]
    tmp = tmp_path_factory.mktemp("tp")
    path = tmp / "t.perfetto-trace"
    w = PerfettoWriter(path, compress=compress)
    for thread, events in batches:
        w.write(thread, events)
    w.close()
    check(path, tmp)


OTEL_PROGRAM = """
import asyncio, sys, threading
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link
import tracebridge
from tracebridge.otel import PerfettoSpanProcessor

provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
provider.add_span_processor(PerfettoSpanProcessor(sys.argv[1]))
tracer = provider.get_tracer("tp")
with tracer.start_as_current_span("producer") as producer:
    pass
with tracer.start_as_current_span("consumer", links=[Link(producer.get_span_context())]):
    with tracebridge.span("tb.inside", level=2):
        try:
            with tracer.start_as_current_span("fails"):
                raise ValueError("no")
        except ValueError:
            pass
a = tracer.start_span("a"); b = tracer.start_span("b"); a.end(); b.end()
h = tracer.start_span("handoff"); t = threading.Thread(target=h.end); t.start(); t.join()
async def task(n):
    with tracer.start_as_current_span(f"task{n}"):
        await asyncio.sleep(0.001 * (3 - n))
async def main():
    await asyncio.gather(*(task(n) for n in range(3)))
asyncio.run(main())
tracebridge.configure(flush_interval=0.01)
with tracer.start_as_current_span("long") as long:
    with tracer.start_as_current_span("inside long"):
        tracebridge.flush()  # a writer round: "long" is written as begun
    long.set_attribute("late", 7)
    long.record_exception(KeyError("k"))
open_at_exit = tracer.start_span("still open")
"""


def test_otel_trace(tmp_path: Path) -> None:
    out = tmp_path / "otel.perfetto-trace"
    subprocess.run([sys.executable, "-c", OTEL_PROGRAM, str(out)], check=True, capture_output=True)
    check(out, tmp_path)
    assert query(out, "select name from process where pid != 0", tmp_path) == [["checkout"]]
    _, _, flows, _ = map(int, query(out, COUNTS, tmp_path)[0])
    assert flows == 1  # producer -> consumer
    correlation = (
        "select s.name, a.display_value from slice s join args a using(arg_set_id)"
        " where a.key = 'correlation_id' and s.name in ('consumer', 'fails') order by s.name"
    )
    (_, trace_id), (_, same) = query(out, correlation, tmp_path)
    assert len(trace_id) == 32 and same == trace_id
    late = "select a.key, a.display_value from slice s join args a using(arg_set_id) where s.name = 'long'"
    args = dict(map(tuple, query(out, late, tmp_path)))
    assert args["debug.late"] == "7" and args["debug.exception_type"] == "KeyError"
    assert query(out, "select name, dur from slice where name = 'still open'", tmp_path) == [
        ["still open", "-1"]
    ]


def test_merged_traces(tmp_path: Path) -> None:
    first, second, merged = (tmp_path / n for n in ("a.pt", "b.pt", "m.pt"))
    for out in (first, second):
        subprocess.run(
            [sys.executable, "-m", "tracebridge", "demo", "-o", str(out)], check=True, capture_output=True
        )
    subprocess.run(
        [sys.executable, "-m", "tracebridge", "merge", str(second), str(first), "-o", str(merged)],
        check=True,
        capture_output=True,
    )
    check(merged, tmp_path)
    assert len(query(merged, "select pid from process where pid != 0", tmp_path)) == 2
