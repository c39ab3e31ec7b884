"""OpenTelemetry spans into Perfetto traces, against the real opentelemetry-sdk."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer

import tracebridge
from tracebridge import _accel
from tracebridge._recorder.runtime import RT
from tracebridge.otel import (
    PerfettoSpanExporter,
    PerfettoSpanProcessor,
    TraceLineSpanProcessor,
    frames_from_stacktrace,
)
from tracebridge.reading import read_trace

from helpers import app_events, decode, perfetto_import


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    p = TracerProvider(resource=Resource.create({"service.name": "checkout"}), shutdown_on_exit=False)
    yield p
    p.shutdown()


def tracer_for(provider: TracerProvider) -> Tracer:
    return provider.get_tracer("tests.otel", "1.0")


def fail_here() -> None:
    raise ValueError("card declined")


def test_spans_attributes_events_failures_links(provider: TracerProvider, trace_path: Path) -> None:
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    tracer = tracer_for(provider)
    with tracer.start_as_current_span("producer") as producer:
        pass
    with tracer.start_as_current_span(
        "GET /cart",
        kind=SpanKind.SERVER,
        links=[Link(producer.get_span_context())],
        attributes={"http.response.status_code": 200, "ok": True, "ratio": 0.5, "tags": ("a", "b")},
    ) as server:
        server.add_event("cache_miss", {"key": "cart:42"})
        with tracer.start_as_current_span("charge") as charge, tracebridge.span("tb.inner", level=2):
            try:
                fail_here()
            except ValueError as exc:
                charge.record_exception(exc)
                charge.set_status(Status(StatusCode.ERROR, "declined"))
    tracebridge.stop()

    trace = read_trace(trace_path)
    assert trace.problems == []
    assert trace.process_name == "checkout"
    spans = {e.name: e for e in trace.events if e.kind == "span"}
    get, charge_ev, inner = spans["GET /cart"], spans["charge"], spans["tb.inner"]
    # One thread, properly nested: all on the thread's own track.
    assert not any(e.overlapping for e in spans.values())
    assert (
        get.start_ns <= charge_ev.start_ns <= inner.start_ns <= inner.end_ns <= charge_ev.end_ns <= get.end_ns
    )
    assert get.metadata == {
        "http.response.status_code": 200,
        "ok": True,
        "ratio": 0.5,
        "tags": ["a", "b"],
        "otel.kind": "SERVER",
        "otel.scope": "tests.otel",
    }
    assert get.trace_id == server.get_span_context().trace_id
    assert charge_ev.error is not None and charge_ev.error.type == "ValueError"
    assert charge_ev.error.message == "card declined"
    assert [f.function for f in charge_ev.error.frames][-2:] == [
        "test_spans_attributes_events_failures_links",
        "fail_here",
    ]
    assert charge_ev.metadata["otel.status"] == "ERROR"
    instants = {e.name: e for e in trace.events if e.kind == "instant"}
    assert instants["cache_miss"].metadata == {"key": "cart:42"}
    exc_instant = instants["exception"]  # exception.type and .message are how files carry errors
    assert exc_instant.error is not None and exc_instant.error.type == "ValueError"
    # The link: the producer's own flow id is on the GET span too.
    producer_id = producer.get_span_context().span_id
    assert spans["producer"].flows == (producer_id,)
    assert get.flows == (server.get_span_context().span_id, producer_id)

    # The same through the official schema: typed annotations, correlation id, callstack.
    official = decode(trace_path)
    events = [p.track_event for p in official.packet if p.HasField("track_event") and p.track_event.type == 1]
    (get_begin,) = [
        e for e in events if e.correlation_id_str and e.flow_ids[:1] == [server.get_span_context().span_id]
    ]
    assert get_begin.correlation_id_str == f"{server.get_span_context().trace_id:032x}"
    typed = sorted(
        "array_values" if len(a.array_values) else str(a.WhichOneof("value"))
        for a in get_begin.debug_annotations
    )
    # The attributes, otel.kind, otel.scope and the trace level (2).
    assert typed == [
        "array_values", "bool_value", "double_value", "int_value", "int_value", "string_value", "string_value"
    ]  # fmt: skip
    (with_stack,) = [e for e in events if len(e.callstack.frames)]
    assert with_stack.callstack.frames[-1].function_name == "fail_here"
    names = {
        p.track_descriptor.process.process_name
        for p in official.packet
        if p.track_descriptor.HasField("process")
    }
    assert "checkout" in names


def test_out_of_order_and_cross_thread_ends_get_tracks_of_their_own(
    provider: TracerProvider, trace_path: Path
) -> None:
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    tracer = tracer_for(provider)
    a = tracer.start_span("a")
    b = tracer.start_span("b")
    a.end()  # b is still open: a ends out of order
    b.end()
    handoff = tracer.start_span("handoff")
    t = threading.Thread(target=handoff.end, name="finisher")
    t.start()
    t.join()
    with tracer.start_as_current_span("nested"):
        pass
    tracebridge.stop()
    trace = read_trace(trace_path)
    assert trace.problems == []
    spans = {e.name: e for e in trace.events if e.kind == "span"}
    assert spans["a"].overlapping and not spans["b"].overlapping
    assert spans["handoff"].overlapping and spans["handoff"].thread_name == "MainThread"
    assert not spans["nested"].overlapping


def test_asyncio_tasks_overlap_without_crossing(provider: TracerProvider, trace_path: Path) -> None:
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    tracer = tracer_for(provider)

    async def task(n: int) -> None:
        with tracer.start_as_current_span(f"task{n}"):
            await asyncio.sleep(0.001 * (3 - n))
            with tracer.start_as_current_span(f"step{n}"):
                await asyncio.sleep(0.001)

    async def main() -> None:
        await asyncio.gather(*(task(n) for n in range(3)))

    asyncio.run(main())
    tracebridge.stop()
    trace = read_trace(trace_path)
    assert trace.problems == []
    assert sorted(e.name for e in trace.events if e.kind == "span") == sorted(
        [f"task{n}" for n in range(3)] + [f"step{n}" for n in range(3)]
    )


def test_open_spans_and_spans_after_stop(provider: TracerProvider, trace_path: Path) -> None:
    processor = PerfettoSpanProcessor(trace_path)
    provider.add_span_processor(processor)
    tracer = tracer_for(provider)
    late = tracer.start_span("ends after stop")
    tracebridge.stop()
    late.end()
    assert processor.dropped == 1
    assert read_trace(trace_path).problems == []


def test_trace_lines_for_otel_spans(provider: TracerProvider, caplog: pytest.LogCaptureFixture) -> None:
    provider.add_span_processor(TraceLineSpanProcessor(slow="3600s"))
    tracer = tracer_for(provider)
    try:
        with caplog.at_level(logging.INFO, logger="tracebridge.trace"):
            with tracer.start_as_current_span(
                "GET /users", kind=SpanKind.SERVER, attributes={"http.response.status_code": 200}
            ):
                pass
            tracebridge.flush()
    finally:
        tracebridge.configure(log_lines=None)
    (line,) = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"\[TRACE\] GET /users \(\d+(ns|us|ms)\) \{http.response.status_code=200\}", line)


def test_exporter_behind_batch_processor(provider: TracerProvider, trace_path: Path) -> None:
    exporter = PerfettoSpanExporter(trace_path)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = tracer_for(provider)
    with tracer.start_as_current_span("root") as root:
        for i in range(3):
            with tracer.start_as_current_span("child", attributes={"i": i}):
                pass
    provider.force_flush()
    tracebridge.stop()
    trace = read_trace(trace_path)
    assert trace.problems == []
    spans = [e for e in trace.events if e.kind == "span"]
    assert len(spans) == 4
    track = f"trace {root.get_span_context().trace_id:032x}"
    assert {e.track for e in spans} == {track}
    assert all(e.trace_id == root.get_span_context().trace_id for e in spans)


def test_frames_from_stacktrace() -> None:
    text = (
        "Traceback (most recent call last):\n"
        '  File "a.py", line 3, in outer\n    inner()\n'
        "KeyError: 1\n\nDuring handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n"
        '  File "b.py", line 10, in handler\n    x()\n'
        '  File "c.py", line 20, in x\n    raise ValueError\n'
        "ValueError\n"
    )
    assert [(f.function, f.file, f.line) for f in frames_from_stacktrace(text)] == [
        ("handler", "b.py", 10),
        ("x", "c.py", 20),
    ]
    assert frames_from_stacktrace("not a traceback") == ()


def test_two_processors_record_a_span_once(
    provider: TracerProvider, trace_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    provider.add_span_processor(TraceLineSpanProcessor())
    try:
        with caplog.at_level(logging.INFO, logger="tracebridge.trace"):
            with tracer_for(provider).start_as_current_span("once"):
                pass
            tracebridge.stop()
    finally:
        tracebridge.configure(log_lines=None)
    assert [e.name for e in tracebridge.read(trace_path)] == ["once"]
    assert len(caplog.records) == 1


def test_long_spans_are_written_as_begun_while_they_run(provider: TracerProvider, trace_path: Path) -> None:
    tracebridge.configure(flush_interval=0.01)
    try:
        provider.add_span_processor(PerfettoSpanProcessor(trace_path))
        tracer = tracer_for(provider)
        with tracer.start_as_current_span("long", attributes={"phase": "one"}) as long:
            time.sleep(0.02)  # longer than a writer round (0.01 s here)
            for _ in range(3):
                with tracer.start_as_current_span("step"):
                    tracebridge.flush()  # a writer round: "long" is written as begun
            long.set_attribute("phase", "two")
            long.record_exception(ValueError("late failure"))
        tracebridge.stop()
    finally:
        tracebridge.configure(flush_interval=0.1)
    # The file has the BEGIN of "long" before its steps, and its END after them.
    official = decode(trace_path)
    kinds = [(e.type, e.name_iid) for e in app_events(official)]
    assert kinds[0][0] == 1 and sum(t == 2 for t, _ in kinds) == 4
    # Its END came on its own, with what was known only then (phase, otel.scope, the exception).
    ends = [e for e in app_events(official) if e.type == 2]
    (late,) = [e for e in ends if len(e.debug_annotations)]
    assert len(late.debug_annotations) >= 3
    trace = read_trace(trace_path)
    assert trace.problems == []
    spans = {e.name: e for e in trace.events if e.kind == "span"}
    assert sorted(e.name for e in trace.events if e.kind == "span") == ["long", "step", "step", "step"]
    ev = spans["long"]
    assert ev.end_ns is not None and ev.metadata["phase"] == "two"
    assert ev.error is not None and ev.error.type == "ValueError"
    assert all(ev.start_ns <= s.start_ns and s.end_ns <= ev.end_ns for s in trace.events if s.name == "step")  # type: ignore[operator]
    assert not ev.overlapping


def test_a_killed_process_still_shows_its_open_spans(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import textwrap

    out = tmp_path / "killed.perfetto-trace"
    code = textwrap.dedent(
        f"""
        import sys, time
        from opentelemetry.sdk.trace import TracerProvider
        import tracebridge
        from tracebridge.otel import PerfettoSpanProcessor
        tracebridge.configure(flush_interval=0.01)
        provider = TracerProvider()
        provider.add_span_processor(PerfettoSpanProcessor({str(out)!r}))
        tracer = provider.get_tracer("k")
        with tracer.start_as_current_span("request"):
            with tracer.start_as_current_span("done"):
                pass
            with tracer.start_as_current_span("stuck"):
                time.sleep(0.05)
                tracebridge.flush()  # a writer round after both spans ran longer than a round
                print("ready", flush=True)
                time.sleep(60)
        """
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    trace = read_trace(out)
    assert trace.problems == []
    spans = {e.name: e for e in trace.events if e.kind == "span"}
    assert set(spans) == {"request", "done", "stuck"}
    assert spans["request"].end_ns is None and spans["stuck"].end_ns is None
    assert spans["done"].end_ns is not None


@pytest.mark.parametrize("suffix", [".json", None])
def test_long_spans_in_json_and_memory_are_written_once(
    provider: TracerProvider, tmp_path: Path, suffix: str | None
) -> None:
    tracebridge.configure(flush_interval=0.01)
    try:
        if suffix is None:
            session = tracebridge.start(level=2)
            provider.add_span_processor(PerfettoSpanProcessor(session))
        else:
            provider.add_span_processor(PerfettoSpanProcessor(tmp_path / f"t{suffix}"))
        with tracer_for(provider).start_as_current_span("long"):
            time.sleep(0.02)
            tracebridge.flush()
        stopped = tracebridge.stop()
    finally:
        tracebridge.configure(flush_interval=0.1)
    events = stopped.events if suffix is None else tracebridge.read(tmp_path / f"t{suffix}")
    assert [(e.name, e.end_ns is not None) for e in events if e.kind == "span"] == [("long", True)]


def test_the_end_of_a_span_written_as_begun_is_never_dropped(
    provider: TracerProvider, trace_path: Path
) -> None:
    # Its BEGIN is in the file: dropping its END (a full queue) would leave the slice open over every
    # later slice of the thread.
    tracebridge.configure(flush_interval=0.01, thread_buffer=4)
    try:
        provider.add_span_processor(PerfettoSpanProcessor(trace_path))
        tracer = tracer_for(provider)
        with tracer.start_as_current_span("long"):
            time.sleep(0.02)  # longer than a writer round
            tracebridge.flush()  # "long" is written as begun
            gate = threading.Event()
            session = RT.session
            assert session is not None
            real_round = session._round
            session._round = lambda final=False: gate.wait(30) and real_round(final)  # type: ignore[method-assign]
            for _ in range(10):  # the queue (4) fills while the writer waits
                with tracer.start_as_current_span("step"):
                    pass
        gate.set()
        session._round = real_round  # type: ignore[method-assign]
        tracebridge.stop()
    finally:
        tracebridge.configure(flush_interval=0.1, thread_buffer=65536)
    stats = read_trace(trace_path).stats
    assert stats is not None and stats.dropped["queue_full"]["span"] == 6
    imported = perfetto_import(trace_path)
    assert imported.stats == {}
    (long,) = [s for s in imported.slices if s[0] == "long"]
    assert long[3] is not None  # it ended
    steps = [s for s in imported.slices if s[0] == "step"]
    assert len(steps) == 4 and all(long[2] <= s[2] and s[2] + (s[3] or 0) <= long[2] + long[3] for s in steps)


@pytest.mark.skipif(not _accel.accelerated, reason="the compiled accelerator is not in use here")
def test_both_paths_record_the_same_spans(tmp_path: Path) -> None:
    """The compiled copy and conversion of ended spans against the pure-Python ones: one workload of every
    shape of span, in memory and in a file, records the same events, counts and process name."""
    workload = Path(__file__).parent.parent / "workloads" / "otel_paths.py"
    results = []
    for pure in ("0", "1"):
        env = {**os.environ, "TRACEBRIDGE_PURE_PYTHON": pure}
        dev = ["-X", "dev", "-W", "error"] if pure == "0" else []  # (the compiled path in development mode)
        cmd = [sys.executable, *dev, str(workload), str(tmp_path / f"{pure}.perfetto-trace")]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        results.append(json.loads(out.stdout))
    c, py = results
    assert c.pop("accelerated") is True and py.pop("accelerated") is False
    assert c == py
    names = [e[1] for e in c["file"]]
    assert names.count("db.query") == 3 and "GET /cart" in names and "still open" in names
    assert c["file_stats"][1] == {"outside_session": {"span": 1}}
    assert c["file_process"] == "checkout"  # (the span that ended last names it: the order is kept)


def test_spans_through_the_processor_keep_no_memory(provider: TracerProvider, trace_path: Path) -> None:
    """What on_end queues and the writer makes of it is freed (on the compiled path, its copy and
    conversion hold their references right): memory after 6,000 more spans is what it was."""
    provider.add_span_processor(PerfettoSpanProcessor(trace_path))
    tracer = tracer_for(provider)

    def spans(n: int) -> None:
        for i in range(n):
            with tracer.start_as_current_span("work", attributes={"item": i, "queue": "orders"}):
                pass
        tracebridge.flush()
        gc.collect()

    spans(3000)  # (interned names, caches, the file's buffers: made once)
    tracemalloc.start()
    try:
        spans(3000)
        before = tracemalloc.get_traced_memory()[0]
        spans(6000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        tracebridge.stop()
    assert grown < 10_000  # (an object kept a span would be 6,000 of them: 200 KB and more)
