"""Child processes, exits and failing files (issue 14): every process of a program in one trace, SIGTERM
finishing the file, a deleted file made anew, a full disk losing as little as it can, and faults said on
stderr. Each case runs in a process of its own (with a timeout)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from tracebridge.cli import main as cli
from tracebridge.reading import read_trace

from helpers import official_view, perfetto_import

TIMEOUT = 120

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


def run(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )


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
                    with ctx.Pool(3) as pool:  # (its __exit__ terminates the workers: SIGTERM)
                        pids = set(pool.map(task, range(150)))
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
    assert names == {"parent": 1, "task": 200, "child_span": 400}
    assert sorted(e.metadata["i"] for e in trace.events if e.name == "task") == sorted(
        [*range(150), *range(50)]
    )
    assert pids <= processes(path)  # every worker a process of its own in the one file
    assert perfetto_import(path).stats == {}  # sequences renumbered: nothing the importer skips
    assert trace.stats is not None and trace.stats.recorded["span"] == 601
    assert not (tmp_path / "pool.perfetto-trace.children").exists()


def test_children_in_a_chrome_json_trace(tmp_path: Path) -> None:
    path = tmp_path / "pool.json"
    result = run(
        TASKS
        + f"""
tracebridge.start(output={str(path)!r})
with mp.get_context("fork").Pool(2) as pool:
    pool.map(task, range(20))
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
    result = run(
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


def test_sigterm_finishes_the_trace_and_the_process_still_dies_of_it(tmp_path: Path) -> None:
    path = tmp_path / "term.perfetto-trace"
    code = f"""
        import sys, tracebridge
        tracebridge.configure(flush_interval=30)  # nothing written before the signal
        tracebridge.start(output={str(path)!r})
        for i in range(500):
            with tracebridge.span("work", i=i):
                pass
        print("ready", flush=True)
        sys.stdin.read()  # blocked in a read when the signal comes
    """
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            child.send_signal(signal.SIGTERM)
            assert child.wait(TIMEOUT) == -signal.SIGTERM
        finally:
            if child.poll() is None:
                child.kill()
    trace = read_trace(path)
    assert trace.problems == [] and trace.notes == []
    assert sum(e.name == "work" for e in trace.events) == 500
    assert trace.stats is not None and trace.stats.recorded["span"] == 500


def test_sigterm_handled_by_the_program_is_left_to_it(tmp_path: Path) -> None:
    path = tmp_path / "own.perfetto-trace"
    result = run(
        f"""
        import os, signal, tracebridge
        got = []
        signal.signal(signal.SIGTERM, lambda *a: got.append("theirs"))
        tracebridge.start(output={str(path)!r})
        os.kill(os.getpid(), signal.SIGTERM)
        with tracebridge.span("after"):
            pass
        tracebridge.stop()
        print(got, signal.getsignal(signal.SIGTERM).__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['theirs']", "<lambda>"]
    assert [e.name for e in read_trace(path).events] == ["after"]


def test_a_deleted_trace_file_is_made_anew_and_said(tmp_path: Path) -> None:
    path = tmp_path / "deleted.perfetto-trace"
    for fmt in ("perfetto", "json"):
        out = path if fmt == "perfetto" else tmp_path / "deleted.json"
        result = run(
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
    result = run(
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
    result = run(
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
