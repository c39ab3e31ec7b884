"""Child processes and failing files (issue 14): every process of a program in one trace, a deleted file
made anew, a full disk losing as little as it can, and faults said on stderr (SIGTERM: test_exits.py).
Each case runs in a process of its own (with a timeout)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from tracebridge.cli import main as cli
from tracebridge.reading import read_trace

from helpers import TIMEOUT, official_view, perfetto_import, run_python

TASKS = """
import multiprocessing as mp, os, sys, tracebridge
from concurrent.futures import ProcessPoolExecutor

def task(i):
    with tracebridge.span("task", i=i):
        pass
    return os.getpid()

def spans(n):
    for i in range(n):
        with tracebridge.span("child_span", i=i):
            pass
"""


def processes(path: Path) -> set[int]:
    tracks = official_view(path)["tracks"].values()
    return {t.process.pid for t in tracks if t.HasField("process")}


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pools_executors_and_processes_are_in_the_parents_trace(tmp_path: Path, method: str) -> None:
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method}")
    path = tmp_path / "pool.perfetto-trace"
    script = tmp_path / "prog.py"  # (spawned children import the main module: it must be a file)
    script.write_text(
        TASKS
        + textwrap.dedent(
            f"""
            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                ctx = mp.get_context({method!r})
                with tracebridge.span("parent"):
                    with ctx.Pool(3) as pool:
                        pids = set(pool.map(task, range(150)))
                        pool.close()
                        pool.join()
                    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
                        pids |= set(ex.map(task, range(50)))
                    p = ctx.Process(target=spans, args=(400,))
                    p.start()
                    p.join()
                    pids.add(p.pid)
                tracebridge.stop()
                print(*sorted(pids))
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    pids = set(map(int, result.stdout.split()))
    trace = read_trace(path)
    assert trace.problems == []
    names = Counter(e.name for e in trace.events)
    assert names == {"parent": 1, "pool.task task": 200, "task": 200, "child_span": 400}  # (see test_pools)
    assert sorted(e.metadata["i"] for e in trace.events if e.name == "task") == sorted(
        [*range(150), *range(50)]
    )
    assert pids <= processes(path)  # every worker a process of its own in the one file
    assert perfetto_import(path).stats == {}  # sequences renumbered: nothing the importer skips
    assert trace.stats is not None and trace.stats.recorded["span"] == 801
    assert not (tmp_path / "pool.perfetto-trace.children").exists()


def test_children_in_a_chrome_json_trace(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    result = run_python(
        TASKS
        + f"""
tracebridge.start(output={str(path)!r})
with mp.get_context("fork").Pool(2) as pool:
    pool.map(task, range(20))
    pool.close()
    pool.join()
tracebridge.stop()
"""
    )
    assert result.returncode == 0, result.stderr
    trace = read_trace(path)
    assert trace.problems == [] and trace.notes == []
    assert Counter(e.name for e in trace.events) == {"task": 20}
    assert trace.stats is not None and trace.stats.recorded["span"] == 20


def test_a_child_that_outlives_the_parent_keeps_a_file_that_summary_names(tmp_path: Path) -> None:
    path = tmp_path / "outlived.perfetto-trace"
    done = tmp_path / "child-done"
    result = run_python(
        TASKS
        + f"""
import time
tracebridge.start(output={str(path)!r})
parent = os.getpid()
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    spans(10)
    os.write(w, b"x")  # (its file exists: it began recording as it was forked)
    while os.getppid() == parent:  # until the parent has exited
        time.sleep(0.01)
    spans(5)
    tracebridge.stop()
    open({str(done)!r}, "w").close()
    os._exit(0)
os.read(r, 1)
with tracebridge.span("parent"):
    pass
print(pid)
"""
    )
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout)
    assert "1 child process(es)" in result.stderr and "still recording" in result.stderr
    for _ in range(TIMEOUT * 10):  # the orphaned child finishes on its own
        if done.exists():
            break
        time.sleep(0.1)
    sidecar = tmp_path / "outlived.perfetto-trace.children" / f"{pid}.perfetto-trace"
    assert Counter(e.name for e in read_trace(sidecar).events) == {"child_span": 15}
    assert Counter(e.name for e in read_trace(path).events) == {"parent": 1}
    out = subprocess.run(
        [sys.executable, "-m", "tracebridge", "summary", str(path)], capture_output=True, text=True
    )
    assert out.returncode == 0 and f"{sidecar.name}" in out.stderr and "tracebridge merge" in out.stderr


def test_a_deleted_trace_file_is_made_anew_and_said(tmp_path: Path) -> None:
    path = tmp_path / "deleted.perfetto-trace"
    for fmt in ("perfetto", "json"):
        out = path if fmt == "perfetto" else tmp_path / "deleted.json"
        result = run_python(
            f"""
            import os, tracebridge
            tracebridge.start(output={str(out)!r})
            for i in range(100):
                with tracebridge.span("before", i=i):
                    pass
            tracebridge.flush()
            os.unlink({str(out)!r})
            for i in range(50):
                with tracebridge.span("after", i=i):
                    pass
            tracebridge.stop()
            """
        )
        assert result.returncode == 0, result.stderr
        assert "was deleted or replaced while recording" in result.stderr
        assert result.stderr.count("\n") == 1
        trace = read_trace(out)
        assert trace.problems == []
        assert Counter(e.name for e in trace.events) == {"after": 50}
        if fmt == "perfetto":
            assert perfetto_import(out).stats == {}


def test_a_full_disk_loses_little_and_says_so_on_stderr(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes writes past 124 KB fail (EFBIG) as a full disk does (ENOSPC).
    path = tmp_path / "full.perfetto-trace"
    result = run_python(
        f"""
        import logging, resource, signal, tracebridge
        from tracebridge.logging import PerfettoHandler
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (124 * 1024, 124 * 1024))
        tracebridge.configure(compress=False)
        logging.basicConfig(handlers=[PerfettoHandler({str(path)!r})], level=logging.INFO, force=True)
        for i in range(20_000):
            with tracebridge.span("work", i=i):
                pass
            if i % 1000 == 999:
                tracebridge.flush()
        s = tracebridge.stop()
        print(s.stats.recorded["span"], sum(s.stats.lost.values()))
        """
    )
    assert result.returncode == 0, result.stderr
    recorded, lost = map(int, result.stdout.split())
    assert recorded + lost == 20_000 and recorded > 0 and lost > 0
    assert os.path.getsize(path) > 100 * 1024  # what fit was written, not all-or-nothing batches
    written = sum(e.name == "work" for e in read_trace(path).events)
    assert written == recorded
    lines = result.stderr.splitlines()
    assert any("sink.write failed: OSError" in line for line in lines), lines
    assert any(f"{lost:,} events lost (" in line and "File too large" in line for line in lines), lines
    assert len(lines) == 2  # once per cause, then the counts as the recording ends


def test_a_cut_off_chrome_json_trace_reads_up_to_its_last_event(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    result = run_python(
        f"""
        import os, tracebridge
        tracebridge.start(output={str(path)!r})
        for i in range(300):
            with tracebridge.span("work", i=i):
                pass
        tracebridge.flush()
        os._exit(0)  # no end written
        """
    )
    assert result.returncode == 0, result.stderr
    data = path.read_bytes()
    for cut in (len(data), len(data) - 17):
        path.write_bytes(data[:cut])
        trace = read_trace(path)
        assert trace.problems == [] and "cut off" in trace.notes[0]
        assert [e.metadata["i"] for e in trace.events] == list(range(300 if cut == len(data) else 299))
        assert cli(["convert", str(path), "-o", str(tmp_path / "out.perfetto-trace")]) == 0


def test_tracebridge_run_follows_spawned_children_and_instruments_them_too(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("def compute(i):\n    return i * i\n")
    (tmp_path / "prog.py").write_text(
        textwrap.dedent(
            """
            import multiprocessing as mp
            import helper

            def work(i):
                return helper.compute(i)

            if __name__ == "__main__":
                with mp.get_context("spawn").Pool(2) as pool:
                    print(sum(pool.map(work, range(20))))
                    pool.close()  # (the workers end on their own, their traces finished)
                    pool.join()
            """
        )
    )
    path = tmp_path / "run.perfetto-trace"
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", "-o", str(path), "prog.py"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "2470\n"
    trace = read_trace(path)
    assert trace.problems == []
    computed = [e for e in trace.events if e.name == "helper.compute"]
    assert len(computed) == 20  # instrumented in the spawned workers as in the parent
    assert len(processes(path)) >= 2  # the parent and its workers
    assert not (tmp_path / "run.perfetto-trace.children").exists()
    assert "child processes' traces added" in result.stderr


def test_a_handler_made_at_import_in_a_spawned_child_joins_the_parents_trace(tmp_path: Path) -> None:
    # The child imports the main module again before it knows it is a child: the handler made there
    # must not start a recording of its own into the parent's file (which would wipe it).
    path = tmp_path / "logs.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import logging, multiprocessing as mp
            import tracebridge
            from tracebridge.logging import PerfettoHandler
            logging.basicConfig(handlers=[PerfettoHandler({str(path)!r})], level=logging.INFO)
            log = logging.getLogger("prog")

            def task(i):
                log.info("task %d", i)

            if __name__ == "__main__":
                log.info("parent before")
                with mp.get_context("spawn").Pool(2) as pool:
                    pool.map(task, range(20))
                    pool.close()
                    pool.join()
                log.info("parent after")
                tracebridge.stop()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    trace = read_trace(path)
    assert trace.problems == []
    names = Counter(e.metadata.get("message_template", e.name) for e in trace.events)
    assert names == {"parent before": 1, "parent after": 1, "task %d": 20}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_child_started_just_before_stop_is_taken_at_exit(tmp_path: Path, method: str) -> None:
    path = tmp_path / "late.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        TASKS
        + textwrap.dedent(
            f"""
            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                p = mp.get_context({method!r}).Process(target=spans, args=(30,))
                p.start()
                tracebridge.stop()  # (the child may not have begun recording yet)
                p.join()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert Counter(e.name for e in read_trace(path).events) == {"child_span": 30}
    assert not (tmp_path / "late.perfetto-trace.children").exists()


def test_a_relative_trace_path_and_a_chdir_make_one_trace(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import os, tracebridge
                tracebridge.start(output="t.perfetto-trace")
                for i in range(100):
                    with tracebridge.span("before"):
                        pass
                tracebridge.flush()
                os.chdir("../b")
                for i in range(50):
                    with tracebridge.span("after"):
                        pass
                tracebridge.stop()
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path / "a",
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert Counter(e.name for e in read_trace(tmp_path / "a" / "t.perfetto-trace").events) == {
        "before": 100,
        "after": 50,
    }
    assert not (tmp_path / "b" / "t.perfetto-trace").exists()


def test_sequences_stay_apart_and_clock_snapshots_in_order_across_late_merges(tmp_path: Path) -> None:
    # An activity left open on a thread that wrote nothing (its sequence begins as the file closes), a
    # short child taken at stop() and a long one taken at exit: every sequence id is one process's, and
    # the machine's clock snapshots in the file never go back in time.
    path = tmp_path / "late.perfetto-trace"
    result = run_python(
        TASKS
        + f"""
import time
tracebridge.start(output={str(path)!r})
threading_id = tracebridge.activity_start("left open")
long = mp.get_context("fork").Process(target=lambda: (spans(5), time.sleep(0.5)))
long.start()
short = mp.get_context("fork").Process(target=spans, args=(3,))
short.start()
short.join()
tracebridge.stop()
long.join()
"""
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    view = official_view(path)
    pid_of_sequence: dict[int, set[int]] = {}
    snapshots = []
    for p in view["trace"].packet:
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            pid = d.process.pid if d.HasField("process") else d.thread.pid if d.HasField("thread") else None
            if pid is not None:
                pid_of_sequence.setdefault(p.trusted_packet_sequence_id, set()).add(pid)
        if p.HasField("clock_snapshot"):
            clocks = {c.clock_id: c.timestamp for c in p.clock_snapshot.clocks}
            if 6 in clocks and 64 not in clocks:
                snapshots.append(clocks[6])
    assert all(len(pids) == 1 for pids in pid_of_sequence.values()), pid_of_sequence
    assert len({pid for pids in pid_of_sequence.values() for pid in pids}) == 3
    assert snapshots == sorted(snapshots) and len(snapshots) >= 2
    assert Counter(e.name for e in read_trace(path).events)["child_span"] == 8
    assert perfetto_import(path).stats == {}


def test_a_fork_while_recording_in_memory_records_the_child_in_memory(tmp_path: Path) -> None:
    result = run_python(
        """
        import os, tracebridge
        tracebridge.start(level=2)
        pid = os.fork()
        with tracebridge.span("here"):
            pass
        s = tracebridge.stop()
        # (one write each: two processes' lines on one pipe do not interleave)
        os.write(1, f"{os.getpid()} {[e.name for e in s.events]}\\n".encode())
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        """
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.endswith("['here']") for line in lines)


def test_a_trace_of_several_processes_converts_with_its_processes(tmp_path: Path) -> None:
    path = tmp_path / "procs.perfetto-trace"
    result = run_python(
        TASKS
        + f"""
def opener(i):
    tracebridge.activity_start("left open")  # (never ended: written as begun when the child stops)
    return i

tracebridge.start(output={str(path)!r})
tracebridge.instant("in the parent")
with mp.get_context("fork").Pool(2) as pool:
    pool.map(task, range(10))
    pool.map(opener, range(2))
    pool.close()
    pool.join()
tracebridge.stop()
"""
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    original = read_trace(path)
    assert len(original.processes) >= 2 and original.pid in original.processes
    opened = [e for e in original.events if e.name == "left open"]
    assert len(opened) == 2 and all(e.pid != original.pid and e.end_ns is None for e in opened)

    def by_process(trace: object) -> Counter[tuple[int, str]]:
        return Counter((e.pid, e.name) for e in trace.events)  # type: ignore[attr-defined]

    json_path = tmp_path / "procs.json"
    back = tmp_path / "back.perfetto-trace"
    assert cli(["convert", str(path), "-o", str(json_path)]) == 0
    assert cli(["convert", str(json_path), "-o", str(back)]) == 0
    for converted in (json_path, back):
        trace = read_trace(converted)
        assert trace.problems == []
        assert by_process(trace) == by_process(original)  # every event in the process that made it
        assert trace.pid == original.pid and set(trace.processes) == set(original.processes)
        assert trace.stats is not None and trace.stats.recorded == original.stats.recorded  # type: ignore[union-attr]


def test_a_program_that_subprocess_runs_with_a_preexec_fn_is_not_a_process_of_the_trace(
    tmp_path: Path,
) -> None:
    # (With a preexec_fn, the at-fork hooks run in the child before it execs the program: no session
    # may begin there, or an empty process would join the trace.)
    path = tmp_path / "parent.perfetto-trace"
    result = run_python(
        f"""
        import subprocess, sys, tracebridge
        tracebridge.start(output={str(path)!r})
        with tracebridge.span("work"):
            subprocess.run([sys.executable, "-c", "pass"], preexec_fn=lambda: None, check=True)
        tracebridge.stop()
        """
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    trace = read_trace(path)
    assert list(trace.processes) == [trace.pid] and [e.name for e in trace.events] == ["work"]
    assert not (tmp_path / "parent.perfetto-trace.children").exists()
