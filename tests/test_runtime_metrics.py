"""Runtime metrics (``configure(runtime=True)``): the process's counters, sampled by the writer thread,
and the collector's pauses as slices on the "GC" track; read back from real traces."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._model import GC_CATEGORY, GC_TRACK, Event
from tracebridge._recorder import runtime_metrics
from tracebridge._recorder.runtime import thread_state
from tracebridge._recorder.runtime_metrics import GcPauses, ProcessSampler, RuntimeSource, gc_pauses

from helpers import official_view, perfetto_import

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

PROCESS_COUNTERS = {"mem.rss": "bytes", "cpu.percent": "%", "threads": "count", "fds": "count"}
GC_COUNTERS = {
    "gc.percent": "%",
    "gc.gen0.collections": "count",
    "gc.gen1.collections": "count",
    "gc.gen2.collections": "count",
    "gc.gen0.objects": "count",
}


@pytest.fixture
def runtime() -> Iterator[None]:
    """runtime=True for the test, every pause a slice; gc.callbacks as they were afterwards."""
    before = list(gc.callbacks)
    tracebridge.configure(runtime=True, gc_min_pause=0)
    try:
        yield
    finally:
        tracebridge.configure(runtime=False, gc_min_pause="1ms")
    assert gc.callbacks == before


class Node:
    def __init__(self, parent: Node | None) -> None:
        self.parent = parent
        self.children: list[Node] = []


def make_cycles(n: int) -> None:
    """``n`` objects (and their lists) in reference cycles, left for the collector."""
    root = Node(None)
    for _ in range(n):
        root.children.append(Node(root))


def samples(events: list[Event], name: str) -> list[Event]:
    return sorted((e for e in events if e.kind == "counter" and e.name == name), key=lambda e: e.start_ns)


def pauses(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "span" and e.track == GC_TRACK]


def status_rss() -> int:
    """VmRSS from /proc/self/status (another file than the one the sampler reads), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def record_a_collection(path: Path | None = None) -> tuple[tracebridge.Session, list[Event]]:
    """A session in which cycles are made and collected by a forced full collection inside "work"."""
    session = tracebridge.start(level=2, output=path)
    tracebridge.flush()  # (the first sample is in: the one at the end is a second)
    make_cycles(2000)
    with tracebridge.span("work"):
        gc.collect()
    tracebridge.stop()
    return session, tracebridge.read(path) if path is not None else session.events


@linux
@pytest.mark.parametrize("output", ["perfetto", "memory"])
def test_counters_and_a_forced_collection(runtime: None, trace_path: Path, output: str) -> None:
    _, events = record_a_collection(trace_path if output == "perfetto" else None)
    names = {e.name: e.unit for e in events if e.kind == "counter"}
    # (CPU % and GC % need 10 ms since the sample before: this test may be faster than that)
    assert {**names, "cpu.percent": "%", "gc.percent": "%"} == PROCESS_COUNTERS | GC_COUNTERS
    writer = {(e.thread_name, e.thread_id) for e in events if e.kind == "counter"}
    assert len(writer) == 1 and writer.pop()[0] == "tracebridge-writer"  # (sampled on the writer's thread)
    rss = samples(events, "mem.rss")
    assert len(rss) >= 2
    now = status_rss()
    assert all(now / 2 < e.value < now * 2 for e in rss)  # type: ignore[operator]
    assert all(e.value >= 3 for e in samples(events, "fds"))  # type: ignore[operator]
    assert all(e.value >= 2 for e in samples(events, "threads"))  # type: ignore[operator]  # (and the writer)
    assert all(0 <= e.value <= 100 * (os.cpu_count() or 1) + 1 for e in samples(events, "cpu.percent"))  # type: ignore[operator]
    assert all(0 <= e.value <= 100 + 1 for e in samples(events, "gc.percent"))  # type: ignore[operator]
    for generation in range(3):
        values = [e.value for e in samples(events, f"gc.gen{generation}.collections")]
        assert values == sorted(values)  # (since the process started: they only grow)
    full = [e.value for e in samples(events, "gc.gen2.collections")]
    assert full[-1] - full[0] >= 1  # type: ignore[operator]
    (work,) = [e for e in events if e.name == "work"]
    inside = [e for e in pauses(events) if e.start_ns >= work.start_ns and e.end_ns <= work.end_ns]  # type: ignore[operator]
    (forced,) = [e for e in inside if e.metadata["generation"] == 2]
    assert forced.name == "GC gen 2" and forced.categories == (GC_CATEGORY,) and forced.level == 1
    md = forced.metadata
    assert md["generation"] == 2 and md["collected"] >= 4000 and md["uncollectable"] == 0
    assert (md["thread"], forced.thread_id) == ("MainThread", threading.main_thread().native_id)
    for pause in pauses(events):
        assert pause.name == f"GC gen {pause.metadata['generation']}" and pause.duration_ns > 0  # type: ignore[operator]


@linux
def test_the_counter_tracks_through_perfettos_own_schema(runtime: None, trace_path: Path) -> None:
    record_a_collection(trace_path)
    view = official_view(trace_path)
    tracks = view["tracks"]
    (process,) = [t.uuid for t in tracks.values() if t.HasField("process")]
    counters = {t.name: t for t in tracks.values() if t.HasField("counter")}
    assert set(counters) >= set(PROCESS_COUNTERS) - {"cpu.percent"} | set(GC_COUNTERS) - {"gc.percent"}
    for name, track in counters.items():
        assert track.parent_uuid == process and not track.HasField("thread"), name
    assert counters["mem.rss"].counter.unit == 3  # SIZE_BYTES
    counts = set(GC_COUNTERS) - {"gc.percent"} | {"fds", "threads"}
    assert {counters[n].counter.unit for n in counts} == {2}  # COUNT
    for percent in {"cpu.percent", "gc.percent"} & set(counters):
        assert counters[percent].counter.unit_name == "%"
    order = list(view["trace"].packet)
    for e in view["events"]:
        if e["type"] == 4:  # each counter's descriptor strictly before its first value
            first = next(i for i, p in enumerate(order) if p is e["packet"])
            assert any(p.track_descriptor.uuid == e["track"] for p in order[:first])
    (gc_track,) = [t for t in tracks.values() if t.name == GC_TRACK]
    assert gc_track.parent_uuid == process and not gc_track.HasField("counter")
    on_gc = [e for e in view["events"] if e["track"] == gc_track.uuid and e["type"] == 1]
    assert on_gc and all(set(e["annotations"]) >= {"generation", "collected", "uncollectable"} for e in on_gc)
    assert perfetto_import(trace_path).stats == {}


def test_off_by_default_writes_none_of_it(trace_path: Path) -> None:
    before = list(gc.callbacks)
    tracebridge.start(level=2, output=trace_path)
    assert gc.callbacks == before
    with tracebridge.span("work"):
        gc.collect()
    tracebridge.stop()
    events = tracebridge.read(trace_path)
    assert [e.name for e in events] == ["work"]


def test_start_and_stop_twice_leave_the_callbacks_as_they_were(runtime: None) -> None:
    before = list(gc.callbacks)
    for _ in range(2):
        session = tracebridge.start(level=2)
        tracebridge.configure(runtime=True)  # (again, while it records: still one callback)
        assert gc.callbacks.count(gc_pauses.callback) == 1 and len(gc.callbacks) == len(before) + 1
        gc.collect()
        tracebridge.stop()
        assert gc.callbacks == before
        assert any(e.name == "GC gen 2" for e in session.events)


def test_configure_turns_it_on_and_off_while_a_session_records() -> None:
    before = list(gc.callbacks)
    session = tracebridge.start(level=2)
    try:
        with tracebridge.span("off"):
            gc.collect()
        tracebridge.configure(runtime=True)
        tracebridge.flush()
        with tracebridge.span("on"):
            gc.collect()
        tracebridge.configure(runtime=False)
        assert gc.callbacks == before
        tracebridge.flush()
        counted = len(samples(list(session.events), "gc.gen2.collections"))
        with tracebridge.span("off again"):
            gc.collect()
    finally:
        tracebridge.stop()
        tracebridge.configure(runtime=False)
    spans = {e.name: e for e in session.events if e.kind == "span" and e.track is None}

    def full_collections_in(name: str) -> int:
        span = spans[name]
        return sum(
            e.start_ns >= span.start_ns and e.end_ns <= span.end_ns and e.metadata["generation"] == 2  # type: ignore[operator]
            for e in pauses(session.events)
        )

    assert [full_collections_in(n) for n in ("off", "on", "off again")] == [0, 1, 0]
    assert len(samples(session.events, "gc.gen2.collections")) == counted >= 1  # (no sample once off)


def test_pauses_name_the_thread_that_collected(runtime: None) -> None:
    tracebridge.configure(flush_interval=3600.0)  # (rounds when flush() asks for them)
    try:
        session = tracebridge.start(level=2)
        tracebridge.flush()
        ended = threading.Thread(target=gc.collect, name="short-lived")  # (never records: no state)
        ended.start()
        ended.join()
        tracebridge.flush()
        recorder = threading.Thread(target=lambda: tracebridge.instant("x") or gc.collect(), name="recorder")
        recorder.start()
        recorder.join()
        collected, go_on = threading.Event(), threading.Event()

        def quiet() -> None:
            gc.collect()
            collected.set()
            go_on.wait(60)

        running = threading.Thread(target=quiet, name="still-running")
        running.start()
        collected.wait(60)
        tracebridge.flush()
        go_on.set()
        running.join()
        tracebridge.stop()
    finally:
        tracebridge.configure(flush_interval=0.1)
    full = {e.metadata["thread"]: e for e in pauses(session.events) if e.metadata["generation"] == 2}
    assert set(full) == {"(a thread that has ended)", "recorder", "still-running"}
    assert full["still-running"].thread_id == running.native_id
    assert full["recorder"].thread_id == recorder.native_id
    assert full["(a thread that has ended)"].thread_name == "tracebridge-writer"


def test_other_systems_leave_out_what_they_cannot_read(runtime: None, monkeypatch: Any) -> None:
    monkeypatch.setattr(runtime_metrics, "_proc_dir", lambda: None)
    _, events = record_a_collection()
    names = {e.name for e in events if e.kind == "counter"}
    assert names - {"cpu.percent", "gc.percent"} == {"threads"} | set(GC_COUNTERS) - {"gc.percent"}
    assert all(e.value >= 1 for e in samples(events, "threads"))  # type: ignore[operator]  # (Python's)
    assert any(e.name == "GC gen 2" for e in pauses(events))


def test_a_session_of_trace_lines_logs_long_pauses(runtime: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tracebridge.trace")
    tracebridge.configure(log_lines=True, gc_pause=0)  # (no session: one that feeds the lines starts)
    try:
        with tracebridge.span("step"):
            gc.collect()
        tracebridge.flush()
        lines = [r for r in caplog.records if r.getMessage().startswith("[SLOW] GC gen 2 (")]
        assert lines and all(r.levelno == logging.WARNING for r in lines)
        assert "generation=2" in lines[0].getMessage() and lines[0].getMessage().endswith(" over 0ns")
        assert any(r.getMessage().startswith("[TRACE] step (") for r in caplog.records)
        caplog.clear()
        tracebridge.configure(log_lines=True, gc_pause=3600)
        gc.collect()
        tracebridge.flush()
        assert not [r for r in caplog.records if " GC gen " in r.getMessage()]  # (none an hour long)
    finally:
        tracebridge.configure(log_lines=None)


def test_pauses_past_what_a_round_can_hold_are_counted(runtime: None, monkeypatch: Any) -> None:
    monkeypatch.setattr(gc_pauses, "_capacity", 1)
    tracebridge.configure(flush_interval=3600.0)
    try:
        session = tracebridge.start(level=2)
        tracebridge.flush()
        for _ in range(3):
            gc.collect()
        tracebridge.stop()
    finally:
        tracebridge.configure(flush_interval=0.1)
    assert len(pauses(session.events)) == 1
    assert session.stats.dropped["queue_full"]["span"] >= 2


@pytest.mark.parametrize(("shortest", "sliced"), [("1ms", False), ("400us", True)])
def test_short_pauses_count_but_are_not_slices(
    trace_path: Path, monkeypatch: Any, shortest: str, sliced: bool
) -> None:
    ahead = runtime_metrics.time.perf_counter_ns() + 10**11  # (after the session's start, whatever it is)
    clock = iter(range(ahead, ahead + 10**12, 400_000))  # (each pause takes 0.4 ms)
    monkeypatch.setattr(gc_pauses, "_clock", lambda: next(clock))
    tracebridge.configure(runtime=True, gc_min_pause=shortest)
    try:
        tracebridge.start(level=2, output=trace_path)
        tracebridge.flush()
        for _ in range(3):
            gc.collect()
        tracebridge.stop()
    finally:
        tracebridge.configure(runtime=False, gc_min_pause="1ms")
    events = tracebridge.read(trace_path)
    full = [e.value for e in samples(events, "gc.gen2.collections")]
    assert full[-1] - full[0] >= 3  # type: ignore[operator]  # (counted either way)
    found = [e for e in pauses(events) if e.metadata["generation"] == 2]
    assert (len(found) >= 3) == sliced and (len(found) == 0) != sliced
    assert all(e.duration_ns == 400_000 for e in found)


def test_a_failing_callback_is_reported_not_raised(runtime: None, lenient: None) -> None:
    session = tracebridge.start(level=2)
    gc_pauses.error = ZeroDivisionError("in the callback")
    tracebridge.stop()
    assert session.stats.internal_errors == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_child_records_its_own(tmp_path: Path) -> None:
    path = tmp_path / "fork.perfetto-trace"
    code = f"""
import gc, multiprocessing as mp, os, sys, tracebridge
from tracebridge._recorder.runtime_metrics import gc_pauses

def registered():  # (a child that does not record must not keep its parent's callback)
    os._exit(3 if gc_pauses.callback in gc.callbacks else 0)

tracebridge.configure(runtime=True, gc_min_pause=0)
tracebridge.start(output={str(path)!r})
child = mp.get_context("fork").Process(target=gc.collect)
child.start()
child.join()
tracebridge.stop()
tracebridge.configure(children=False)
tracebridge.start(output={str(tmp_path / "alone.perfetto-trace")!r})
alone = mp.get_context("fork").Process(target=registered)
alone.start()
alone.join()
tracebridge.stop()
print(child.pid, child.exitcode, alone.exitcode)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    pid, child_exit, alone_exit = map(int, done.stdout.split())
    assert (child_exit, alone_exit) == (0, 0)
    theirs = [e for e in tracebridge.read(path) if e.pid == pid]
    assert any(e.name == "GC gen 2" for e in pauses(theirs))
    assert {e.name for e in theirs if e.kind == "counter"} >= {"threads", "gc.gen2.collections"}


# -- the parts ---------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self, *readings: int) -> None:
        self.readings = list(readings)

    def __call__(self) -> int:
        return self.readings.pop(0)


def test_cpu_percent_is_cpu_time_over_wall_time() -> None:
    wall = FakeClock(0, 5_000_000, 1_000_000_000, 3_000_000_000)
    cpu = FakeClock(0, 1_000_000, 500_000_000, 4_500_000_000)
    sampler = ProcessSampler(None, wall_clock=wall, cpu_clock=cpu)

    def cpu_of(found: list[tuple[str, Any, str]]) -> Any:
        return {name: value for name, value, _ in found}.get("cpu.percent")

    assert cpu_of(sampler.sample()) is None  # 5 ms after the baseline: too short to tell
    assert cpu_of(sampler.sample()) == 50.0  # half a core over the first second
    assert cpu_of(sampler.sample()) == 200.0  # two cores since


def test_gc_percent_counts_each_pause_where_it_falls() -> None:
    ms = 1_000_000
    pauses_ = GcPauses()
    source = RuntimeSource(None, pauses_, 0, min_pause_ns=10**12)  # (no slices: nothing to write)
    source._gc_since = 0

    def gc_percent(t: int) -> Any:
        found: list[Any] = []
        source._gc_time(t, found)
        return found[0][1] if found else None

    pauses_.pending.extend([(-10 * ms, 5 * ms, 0, 0, 0, 1), (20 * ms, 30 * ms, 2, 0, 0, 1)])
    source._add_pauses(None, [])  # type: ignore[arg-type]
    pauses_._start = 90 * ms  # (a collection under way at the sample)
    assert gc_percent(100 * ms) == 25.0  # 5 + 10 + 10 ms of 100
    pauses_._start = 0
    pauses_.pending.append((90 * ms, 110 * ms, 2, 0, 0, 1))
    source._add_pauses(None, [])  # type: ignore[arg-type]
    assert gc_percent(105 * ms) is None  # (5 ms since the last: too short to tell)
    assert gc_percent(200 * ms) == 10.0  # the rest of that pause: 10 ms of 100


def test_a_metric_that_cannot_be_read_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "stat").write_text("12 (python) S not numbers")
    sampler = ProcessSampler(str(tmp_path))  # (no fd folder either)
    found = {name for name, _, _ in sampler.sample()}
    assert "mem.rss" not in found and "fds" not in found and "threads" in found
    assert {name for name, _, _ in sampler.sample()} - {"cpu.percent"} == found - {"cpu.percent"}


@linux
def test_open_descriptors_are_counted() -> None:
    sampler = ProcessSampler()

    def fds() -> Any:
        return {name: value for name, value, _ in sampler.sample()}["fds"]

    before = fds()
    r, w = os.pipe()
    try:
        assert fds() == before + 2
    finally:
        os.close(r)
        os.close(w)
    assert fds() == before == len(os.listdir("/proc/self/fd")) - 1


def test_the_callback_times_each_collection() -> None:
    pauses_ = GcPauses(clock=FakeClock(100, 350, 1_000, 1_500, 2_000, 2_100, 3_000), capacity=2)
    info = {"generation": 1, "collected": 7, "uncollectable": 0}
    me = thread_state().info  # (a thread that records: kept as the recorder knows it)
    for _ in range(3):
        pauses_.callback("start", info)
        pauses_.callback("stop", info)
    kept, lost, error = pauses_.take()
    assert kept == [(100, 350, 1, 7, 0, me), (1_000, 1_500, 1, 7, 0, me)] and lost == 1 and error is None
    assert pauses_.take() == ([], 0, None)
    pauses_.callback("stop", info)  # (a stop without its start: registered during a collection)
    assert pauses_.take() == ([], 0, None)


def test_the_callback_never_raises() -> None:
    def broken() -> int:
        raise OSError("no clock")

    pauses_ = GcPauses(clock=broken)
    pauses_.callback("start", {})
    pauses_.callback("stop", {})
    _, _, error = pauses_.take()
    assert isinstance(error, OSError)


def test_the_callback_is_registered_once() -> None:
    before = list(gc.callbacks)
    watch = GcPauses()
    try:
        watch.install()
        watch.install()
        assert gc.callbacks.count(watch.callback) == 1
    finally:
        watch.remove()
    assert gc.callbacks == before


def test_bad_options_are_one_line_at_setup() -> None:
    with pytest.raises(ValueError, match=r"^runtime must be True or False, got 'yes'$"):
        tracebridge.configure(runtime="yes")
    with pytest.raises(ValueError, match=r"^log_lines gc_pause: expected a duration"):
        tracebridge.configure(log_lines=True, gc_pause="soon")
    with pytest.raises(ValueError, match=r"^gc_min_pause: a duration must be a non-negative"):
        tracebridge.configure(runtime=True, gc_min_pause=-1)
    assert tracebridge.configure().runtime is False and tracebridge.configure().log_lines is None
