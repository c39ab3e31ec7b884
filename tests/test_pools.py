"""Trace context into thread and process pools (``pools.py``): a task runs as a span, a child of the span
that submitted it, and a task submitted as one call is the end of a flow from that span."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.pool import ThreadPool
from pathlib import Path

import pytest

import tracebridge
from tracebridge import Event
from tracebridge.reading import read_trace

from helpers import configured, perfetto_import


def task(i: int) -> int:
    with tracebridge.span("inner", i=i):
        pass
    return i


def by_name(events: list[Event], name: str) -> list[Event]:
    return [e for e in events if e.name == name]


def test_a_thread_pool_task_is_a_child_of_the_submitting_span() -> None:
    session = tracebridge.start(level=2)
    with ThreadPoolExecutor(2) as ex:
        with tracebridge.span("submit"):
            assert ex.submit(task, 1).result() == 1
            assert tracebridge.current_span() is not None
        assert ex.submit(task, 2).result() == 2  # no span current: handed on as it is
    tracebridge.stop()
    (submit,) = by_name(session.events, "submit")
    (run,) = by_name(session.events, "pool.task task")
    inner = {e.metadata["i"]: e for e in by_name(session.events, "inner")}
    assert run.parent_id == submit.span_id and run.trace_id == submit.trace_id
    assert run.thread_id != submit.thread_id
    assert inner[1].parent_id == run.span_id and inner[1].trace_id == submit.trace_id
    assert inner[2].parent_id == 0 and inner[2].trace_id != submit.trace_id
    assert submit.flows == run.terminating_flows and len(run.terminating_flows) == 1


def test_a_map_makes_children_without_arrows_and_pools_false_turns_it_off() -> None:
    session = tracebridge.start(level=2)
    with ThreadPool(2) as pool, tracebridge.span("mapping"):
        assert pool.map(task, range(5)) == list(range(5))
    with configured(pools=False), ThreadPoolExecutor(1) as ex, tracebridge.span("off"):
        ex.submit(task, 9).result()
    tracebridge.stop()
    (mapping,) = by_name(session.events, "mapping")
    runs = by_name(session.events, "pool.task task")
    assert len(runs) == 5 and all(r.parent_id == mapping.span_id for r in runs)
    assert mapping.flows == () and all(r.terminating_flows == () for r in runs)
    (off,) = by_name(session.events, "off")
    (nine,) = [e for e in by_name(session.events, "inner") if e.metadata["i"] == 9]
    assert nine.parent_id == 0 and nine.trace_id != off.trace_id


def test_a_failing_task_fails_its_span_and_the_caller_gets_the_exception() -> None:
    def boom() -> None:
        raise KeyError("x")

    session = tracebridge.start(level=2)
    with ThreadPoolExecutor(1) as ex, tracebridge.span("submit"), pytest.raises(KeyError):
        ex.submit(boom).result()
    tracebridge.stop()
    (run,) = [e for e in session.events if e.name.startswith("pool.task")]
    assert run.name.endswith("boom") and run.error is not None and run.error.type == "KeyError"


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_tasks_are_arrows_from_the_submitting_span(tmp_path: Path, method: str) -> None:
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method}")
    path = tmp_path / "tasks.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, tracebridge
            from concurrent.futures import ProcessPoolExecutor

            def task(i):
                with tracebridge.span("inner", i=i):
                    pass
                return i

            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                ctx = mp.get_context({method!r})
                with tracebridge.span("submit"):
                    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                        assert [f.result() for f in [ex.submit(task, i) for i in range(4)]] == [0, 1, 2, 3]
                    with ctx.Pool(2) as pool:
                        assert pool.apply(task, (4,)) == 4
                        assert pool.map(task, range(5, 10)) == list(range(5, 10))
                        pool.close()  # (spawned workers die of terminate()'s SIGTERM at once)
                        pool.join()
                tracebridge.stop()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    trace = read_trace(path)
    assert trace.problems == []  # every flow that ends began (and each ends once)
    names = Counter(e.name for e in trace.events)
    assert names == {"submit": 1, "pool.task task": 10, "inner": 10}
    (submit,) = by_name(trace.events, "submit")
    runs = by_name(trace.events, "pool.task task")
    arrows = [r for r in runs if r.terminating_flows]
    assert len(arrows) == 5  # 4 submits and an apply; the map's 5 calls have none
    assert sorted(f for r in arrows for f in r.terminating_flows) == sorted(submit.flows)
    assert all(r.thread_id != submit.thread_id for r in runs)  # (other processes' main threads)
    assert perfetto_import(path).stats == {}


def test_executor_map_makes_children_without_arrows_and_arrows_are_bounded(tmp_path: Path) -> None:
    from tracebridge.pools import MAX_ARROWS

    path = tmp_path / "many.perfetto-trace"
    tracebridge.start(level=2, output=path)
    with ThreadPoolExecutor(2) as ex:
        with tracebridge.span("mapping"):
            assert list(ex.map(task, range(2000))) == list(range(2000))
        with tracebridge.span("submitting"):
            for f in [ex.submit(task, i) for i in range(MAX_ARROWS + 50)]:
                f.result()
    tracebridge.stop()
    trace = read_trace(path)
    assert trace.problems == []  # (every flow that ends began)
    (mapping,) = by_name(trace.events, "mapping")
    (submitting,) = by_name(trace.events, "submitting")
    runs = by_name(trace.events, "pool.task task")
    assert len(runs) == 2000 + MAX_ARROWS + 50
    assert mapping.flows == () and len(submitting.flows) == MAX_ARROWS
    assert sum(1 for r in runs if r.terminating_flows) == MAX_ARROWS


def test_a_thread_pool_task_carries_the_submitters_context() -> None:
    # The submitter's context goes with the task (as asyncio.to_thread does): OpenTelemetry's current
    # span too, so that the bridge's twins share the submitter's trace.
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.configure(otel=provider)
    try:
        with ThreadPoolExecutor(1) as ex, tracebridge.span("submit", level=1):
            ex.submit(task, 1).result()
    finally:
        tracebridge.configure(otel=None)
        provider.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {"submit", "pool.task task", "inner"} <= set(spans)
    assert len({s.context.trace_id for s in spans.values()}) == 1
    assert spans["pool.task task"].parent.span_id == spans["submit"].context.span_id  # type: ignore[union-attr]


def test_asyncio_to_thread_keeps_its_own_context_unwrapped() -> None:
    import asyncio

    async def main() -> None:
        with tracebridge.span("outer"):
            await asyncio.to_thread(task, 1)

    session = tracebridge.start(level=2)
    asyncio.run(main())
    tracebridge.stop()
    (outer,) = by_name(session.events, "outer")
    (inner,) = by_name(session.events, "inner")
    assert inner.parent_id == outer.span_id  # (its context carries the span already: no task span)
    assert not [e for e in session.events if e.name.startswith("pool.task")]


def test_spawned_children_sample_as_their_parent(tmp_path: Path) -> None:
    path = tmp_path / "sampled.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, tracebridge
            from tracebridge.sampling import ParentBased, TraceIdRatio

            def task(i):
                with tracebridge.span("inner", level=2, i=i):
                    pass

            if __name__ == "__main__":
                tracebridge.configure(sampling=ParentBased(TraceIdRatio(0.0)))  # every root dropped
                tracebridge.start(output={str(path)!r})
                with tracebridge.span("root", level=2):
                    with mp.get_context("spawn").Pool(2) as pool:
                        pool.map(task, range(6))
                        pool.close()
                        pool.join()
                tracebridge.stop()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    trace = read_trace(path)
    assert trace.problems == [] and trace.events == []  # the workers drop what the root's trace dropped
    assert trace.stats is not None and trace.stats.dropped["sampled_out"]["span"] == 13
