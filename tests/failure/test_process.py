"""Faults at process level, each in a child process with a timeout: a killed process, fork, exit paths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import tracebridge
from tracebridge.reading import read_trace

TIMEOUT = 60


def run_child(code: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        **kw,  # type: ignore[arg-type]
    )


def assert_valid(path: Path) -> list[tracebridge.Event]:
    trace = read_trace(path)
    assert trace.problems == [], trace.problems
    return trace.events


def test_sigkill_mid_session_leaves_a_valid_trace(tmp_path: Path) -> None:
    path = tmp_path / "killed.perfetto-trace"
    code = f"""
        import sys, tracebridge
        tracebridge.configure(flush_interval=0.01)
        tracebridge.start(output={str(path)!r})
        n = 0
        while True:
            with tracebridge.span("work", n=n):
                tracebridge.instant("tick")
            n += 1
            if n == 2000:
                tracebridge.flush()
                print("ready", flush=True)
    """
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # keep writing while we kill it
        child.send_signal(signal.SIGKILL)
        child.wait(TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()
    events = assert_valid(path)
    assert sum(1 for e in events if e.name == "work") >= 2000


def test_exit_without_stop_flushes_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "exit.perfetto-trace"
    result = run_child(
        f"""
        import tracebridge, threading
        tracebridge.configure(flush_interval=30)  # nothing is written before exit
        tracebridge.start(output={str(path)!r})
        with tracebridge.span("before_exit"):
            pass
        threading.Thread(target=lambda: tracebridge.instant("from_thread")).start()
        """
    )
    assert result.returncode == 0 and result.stderr == ""
    trace = read_trace(path)
    assert trace.problems == []
    assert {e.name for e in trace.events} == {"before_exit", "from_thread"}
    assert trace.stats is not None and trace.stats.recorded["span"] == 1


def test_uncaught_exception_exit_still_writes_the_failed_span(tmp_path: Path) -> None:
    path = tmp_path / "crash.perfetto-trace"
    result = run_child(
        f"""
        import tracebridge
        tracebridge.start(output={str(path)!r})
        with tracebridge.span("doomed"):
            raise SystemExit("fatal: giving up")
        """
    )
    assert result.returncode == 1 and "giving up" in result.stderr
    (ev,) = assert_valid(path)
    assert ev.error is not None and ev.error.type == "SystemExit"


def test_a_forked_child_is_a_process_of_the_parents_trace(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    path = tmp_path / "fork.perfetto-trace"
    result = run_child(
        f"""
        import os, tracebridge, warnings
        warnings.simplefilter("ignore", DeprecationWarning)
        tracebridge.start(output={str(path)!r})
        with tracebridge.span("before_fork"):
            pass
        pid = os.fork()
        if pid == 0:
            with tracebridge.span("in_child"):
                pass
            tracebridge.stop()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        with tracebridge.span("in_parent"):
            pass
        tracebridge.stop()
        print(pid, status)
        """
    )
    assert result.returncode == 0, result.stderr
    child_pid, status = map(int, result.stdout.split())
    assert status == 0
    trace = read_trace(path)
    assert trace.problems == []
    by_process = {(e.name, e.thread_id == child_pid) for e in trace.events}
    assert by_process == {("before_fork", False), ("in_parent", False), ("in_child", True)}
    assert trace.stats is not None and trace.stats.recorded["span"] == 3  # (both sessions' stats)
    assert not (tmp_path / "fork.perfetto-trace.children").exists()
