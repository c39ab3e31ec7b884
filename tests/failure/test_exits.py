"""SIGTERM finishes the trace (issue 14, exits.py): in the main process and in child processes, where a
watchdog finishes it when the main thread cannot run the handler; a handler of the program's is left to
it. Real signals, each case in a process of its own (with a timeout)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from tracebridge.reading import read_trace

from helpers import TIMEOUT, run_python


@pytest.mark.parametrize("suffix", [".perfetto-trace", ".json"])
def test_sigterm_finishes_the_trace_and_the_process_still_dies_of_it(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"term{suffix}"
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
    result = run_python(
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


def slow_to_close(path: Path, seconds: float) -> str:
    """Source that starts recording into ``path`` with a writer whose close takes ``seconds`` and sets the
    event ``closing`` as it begins (a stop is then under way on the thread that stops)."""
    return textwrap.indent(
        textwrap.dedent(
            f"""
            import os, signal, threading, time, tracebridge
            from tracebridge.sinks.perfetto.writer import PerfettoWriter

            closing = threading.Event()

            class SlowToClose(PerfettoWriter):
                def close(self, *args, **kwargs):
                    closing.set()
                    time.sleep({seconds})
                    super().close(*args, **kwargs)

            tracebridge.start(output={str(path)!r}, sink=lambda s: SlowToClose(s.path))
            """
        ),
        " " * 8,
    )


@pytest.mark.parametrize("main_thread_waits", ["sleep", "sigwait"])
def test_sigterm_while_another_thread_stops_still_ends_the_process(
    tmp_path: Path, main_thread_waits: str
) -> None:
    # (The stop ends on its own thread; the main thread then waits where Python may run no handler.)
    path = tmp_path / "slow.perfetto-trace"
    code = f"""
        {slow_to_close(path, 0.5)}
        with tracebridge.span("work"):
            pass
        stopper = threading.Thread(target=tracebridge.stop)
        stopper.start()
        assert closing.wait(60)
        os.kill(os.getpid(), signal.SIGTERM)  # while the other thread stops
        if {main_thread_waits!r} == "sleep":
            stopper.join()
            time.sleep(60)
        else:
            signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGUSR1}})
            signal.sigwait({{signal.SIGUSR1}})
        print("still alive")
    """
    result = run_python(code)
    assert result.returncode == -signal.SIGTERM, (result.returncode, result.stderr)
    assert result.stdout == "" and result.stderr == ""
    assert [e.name for e in read_trace(path).events] == ["work"]


def test_a_child_forked_while_another_thread_stops_still_dies_of_sigterm(tmp_path: Path) -> None:
    # (The child must not inherit the parent's stop under way: its handler would wait for it forever.)
    path = tmp_path / "parent.perfetto-trace"
    code = f"""
        {slow_to_close(path, 1.0)}
        stopper = threading.Thread(target=tracebridge.stop)
        stopper.start()
        assert closing.wait(60)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            tracebridge.start(output={str(path)!r} + ".own.perfetto-trace")
            os.write(w, b"x")
            time.sleep(60)
            os._exit(0)
        assert os.read(r, 1) == b"x"
        os.kill(pid, signal.SIGTERM)
        stopper.join()
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    """
    result = run_python(code)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split() == ["-15"]


def test_threads_forking_at_once_leave_sigterm_to_every_child(tmp_path: Path) -> None:
    path = tmp_path / "forks.perfetto-trace"
    result = run_python(
        f"""
        import multiprocessing as mp, sys, threading, time, tracebridge
        sys.setswitchinterval(1e-6)  # (threads interleave as often as they can)
        tracebridge.start(output={str(path)!r})
        procs, lock = [], threading.Lock()

        def start_some():
            for _ in range(5):
                p = mp.get_context("fork").Process(target=time.sleep, args=(60,))
                p.start()
                with lock:
                    procs.append(p)

        threads = [threading.Thread(target=start_some) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(20)
        print(sorted({{p.exitcode for p in procs}}, key=str))
        tracebridge.stop()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[-15]"  # every child died of its SIGTERM (none had it blocked)


def test_child_processes_get_the_handler_too(tmp_path: Path) -> None:
    path = tmp_path / "handler.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, signal, tracebridge

            def handler(_):
                return signal.getsignal(signal.SIGTERM).__name__

            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                print(signal.getsignal(signal.SIGTERM).__name__)
                for method in ("fork", "spawn"):
                    with mp.get_context(method).Pool(1) as pool:
                        print(pool.map(handler, [0])[0])
                        pool.close()
                        pool.join()
                tracebridge.stop()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split() == ["_on_sigterm", "_on_sigterm", "_on_sigterm"]


# A child whose main thread waits in sigwait(): Python runs no signal handler there until the wait ends
# (as in a pool worker that a SIGTERM reaches just as it goes back to wait for its next task). The
# parent sends SIGTERM once the child's main thread is in the wait (seen in /proc).
BLOCKED_CHILD = """
import multiprocessing as mp, os, signal, sys, time, tracebridge

def child(ready, own_handler):
    if own_handler:
        signal.signal(signal.SIGTERM, lambda *a: print("theirs", flush=True))
    for i in range(300):
        with tracebridge.span("child_span", i=i):
            pass
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    ready.set()
    signal.sigwait({signal.SIGUSR1})

SIGTIMEDWAIT = {"x86_64": "128", "aarch64": "137"}.get(os.uname().machine)

def in_sigwait(pid):  # (the kernel says where the thread waits: its wait channel, or its system call)
    for _ in range(3000):
        try:
            with open(f"/proc/{pid}/wchan") as f:
                if "sigtimedwait" in f.read():
                    return True
            with open(f"/proc/{pid}/syscall") as f:
                if f.read().split()[0] == SIGTIMEDWAIT:
                    return True
        except (OSError, IndexError):
            return False
        time.sleep(0.01)
    return False

if __name__ == "__main__":
    method, path, own = sys.argv[1], sys.argv[2], sys.argv[3] == "own"
    tracebridge.configure(flush_interval=30)  # nothing written before the signal
    tracebridge.start(output=path)
    ctx = mp.get_context(method)
    ready = ctx.Event()
    p = ctx.Process(target=child, args=(ready, own))
    p.start()
    assert ready.wait(60)
    if not in_sigwait(p.pid):
        print("unknown", flush=True)
        p.kill()
        sys.exit(0)
    p.terminate()
    if own:
        p.join(1.0)  # (5 x exits.GRACE: a watchdog that took the program's handler for its own acts now)
        os.kill(p.pid, signal.SIGUSR1)
    p.join(60)
    tracebridge.stop()
    print(p.exitcode, flush=True)
"""


def blocked_child(tmp_path: Path, method: str, own: str) -> tuple[str, Path]:
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"no {method}")
    script, path = tmp_path / "prog.py", tmp_path / "blocked.perfetto-trace"
    script.write_text(BLOCKED_CHILD)
    result = subprocess.run(
        [sys.executable, str(script), method, str(path), own], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if result.stdout.split()[-1:] == ["unknown"]:
        pytest.skip("no /proc/<pid>/wchan here: cannot tell when the child waits")
    return result.stdout, path


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_a_child_whose_main_thread_cannot_run_the_handler_still_finishes_its_trace(
    tmp_path: Path, method: str
) -> None:
    out, path = blocked_child(tmp_path, method, "ours")
    assert out.split() == ["-15"]  # it died of SIGTERM, as with the default disposition
    trace = read_trace(path)
    assert trace.problems == []
    assert Counter(e.name for e in trace.events) == {"child_span": 300}  # (written by the watchdog's stop)
    assert trace.stats is not None and trace.stats.recorded["span"] == 300 and trace.stats.lost == {}


def test_the_watchdog_leaves_a_handler_of_the_programs_to_it(tmp_path: Path) -> None:
    out, path = blocked_child(tmp_path, "fork", "own")
    assert out.split() == ["theirs", "0"]  # its handler ran once the wait ended, and it lived on
    assert Counter(e.name for e in read_trace(path).events) == {"child_span": 300}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_terminate_keeps_what_the_workers_recorded(tmp_path: Path, method: str) -> None:
    path = tmp_path / "terminated.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, tracebridge

            def task(i):
                with tracebridge.span("task", i=i):
                    pass
                return i

            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                for _ in range(3):
                    pool = mp.get_context({method!r}).Pool(2)
                    assert pool.map(task, range(20)) == list(range(20))
                    pool.terminate()  # (the workers are sent SIGTERM at once)
                    pool.join()
                tracebridge.stop()
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    trace = read_trace(path)
    assert trace.problems == []
    assert Counter(e.name for e in trace.events) == {"task": 60}
    assert trace.stats is not None and trace.stats.recorded["span"] == 60 and trace.stats.lost == {}


def test_a_grandchilds_sigterm_is_not_taken_for_its_parents(tmp_path: Path) -> None:
    # (A forked process inherits its parent's wakeup fd: the watchdog's pipe must not be shared.)
    path = tmp_path / "family.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, os, signal, time, tracebridge

            def child():
                grandchild = os.fork()
                if grandchild == 0:
                    time.sleep(60)
                    os._exit(0)
                time.sleep(0.2)
                os.kill(grandchild, signal.SIGTERM)
                print(os.waitstatus_to_exitcode(os.waitpid(grandchild, 0)[1]), flush=True)
                time.sleep(1.0)  # (5 x exits.GRACE: a watchdog that took the signal for this one's acts now)
                with tracebridge.span("child_lived_on"):
                    pass

            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                p = mp.get_context("fork").Process(target=child)
                p.start()
                p.join(60)
                tracebridge.stop()
                print(p.exitcode)
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split() == ["-15", "0"]
    assert [e.name for e in read_trace(path).events] == ["child_lived_on"]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_library_that_sets_the_wakeup_fd_and_puts_it_back_is_not_disturbed(
    tmp_path: Path, method: str
) -> None:
    # (As trio does: it takes the wakeup fd, and puts back the one it found when it is done; the
    # watchdog's must still be open and non-blocking then, though the recording stopped meanwhile.)
    path = tmp_path / "library.perfetto-trace"
    script = tmp_path / "prog.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import multiprocessing as mp, os, signal, socket, tracebridge

            def child():
                mine, peer = socket.socketpair()
                mine.setblocking(False)
                found = signal.set_wakeup_fd(mine.fileno())
                tracebridge.stop()
                others = [socket.socketpair() for _ in range(3)]  # (new fds: they may reuse a closed one's)
                for a, _ in others:
                    a.setblocking(False)
                signal.set_wakeup_fd(found)  # (raises if it is no fd, or a blocking one)
                signal.signal(signal.SIGUSR1, lambda *args: None)
                os.kill(os.getpid(), signal.SIGUSR1)  # (its number goes to the wakeup fd)
                stray = []
                for _, b in others:
                    try:
                        stray.append(b.recv(10, socket.MSG_DONTWAIT))
                    except BlockingIOError:
                        pass
                print(found != -1, stray, flush=True)

            if __name__ == "__main__":
                tracebridge.start(output={str(path)!r})
                p = mp.get_context({method!r}).Process(target=child)
                p.start()
                p.join(60)
                tracebridge.stop()
                print(p.exitcode)
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.split("\n")[:2] == ["True []", "0"]  # (the watchdog's was set; no stray bytes)
