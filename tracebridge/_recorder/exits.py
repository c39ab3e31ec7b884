"""Exits: SIGTERM finishes the trace before the process dies of it.

A process whose SIGTERM is at its default disposition dies at once: no ``atexit``, no ``finally``, so the
writer's last round and the session's stats would be lost (``Pool.terminate()`` ends its workers so,
and so do service managers). While a session writes a file, tracebridge puts a handler there (only if the
disposition is the default, and only from the main thread, where Python runs signal handlers): it ends
the session under a short deadline, then restores the default and sends the signal again, so that the
process dies of SIGTERM as it would have (same exit status). A handler the program installed is left
alone, before or after: a program that installs its own after tracebridge and calls the one it replaced
gets this behaviour at the end of its own.

A Python-level handler runs only when the main thread runs Python code: a signal that lands just as that
thread enters a blocking wait (a pool worker going back to wait for its next task, as ``Pool.terminate()``
sends it; a thread in ``signal.sigwait``) is handled only when the wait returns, which may be never: about
one pool in a hundred hung so when child processes had the bare handler. So in a child process the
handler comes with a watchdog: a thread that learns of the signal from Python's wakeup fd (the C-level
handler writes each signal's number there, whatever the main thread is doing) and, if the handler has
not begun within :data:`GRACE`, does what it would: finishes the trace, then makes the process die of
SIGTERM (off the main thread, through libc's ``signal()``: ``signal.signal`` works only on the main
thread). It steps aside when a handler of the program's has replaced tracebridge's, and when a wakeup fd
is set already (it keeps that one). It lives as long as the process, its pipe open: a library that took
the wakeup fd may put the watchdog's back later (trio does), after the recording stopped. The main
process keeps the bare handler and leaves the wakeup fd to the program: event loops set their own there
(trio warns when it finds one set), and its SIGTERM does not come in step with such waits as a
worker's does.

The writer thread blocks SIGTERM and SIGINT from birth (see :func:`signals_held`), so that the kernel
delivers them to a thread that runs Python's handlers promptly: the main thread, even when it is
blocked reading a pipe (a pool worker waiting for its next task).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

from .runtime import RT

#: At most this long (or the session's ``timeout``, if shorter) to finish the trace on SIGTERM.
SIGTERM_DEADLINE = 5.0

#: How long the watchdog lets the main thread's handler begin before it finishes the trace itself.
GRACE = 0.2


#: Threads inside ``stop()`` now: a SIGTERM that lands then lets that stop finish, and the process
#: dies of the signal once it has (see :func:`stop_ended`).
stopping = 0
_die_after_stop = False

# Who finishes the trace on a SIGTERM: the handler (main thread) or the watchdog, whichever claims it
# first; the other waits for it to be finished, then dies too.
_began = threading.Event()
_claim = threading.Lock()
_finished = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _die_after_stop
    _began.set()
    if stopping:
        _die_after_stop = True  # (this thread may be the one stopping: waiting for it would deadlock)
        return
    _finish_then_die()


def _finish_then_die() -> None:
    if _claim.acquire(blocking=False):
        try:
            _finish()
        finally:
            _finished.set()
    else:
        _finished.wait(SIGTERM_DEADLINE + 2.0)
    _die()


def _finish() -> None:
    session = RT.session
    shutdown = _shutdown
    if session is None or shutdown is None:
        return
    # On a thread of its own: the main thread may be inside tracebridge holding a lock that the stop
    # needs; then the deadline passes and the process dies as it would have.
    timeout = min(SIGTERM_DEADLINE, session.config.timeout)
    stopper = threading.Thread(target=shutdown, args=(timeout,), name="tracebridge-sigterm", daemon=True)
    try:
        stopper.start()
        stopper.join(timeout + 1.0)
    except Exception:
        pass


def _die() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    # Off the main thread: the default disposition through libc, then the signal again, which the
    # kernel gives a thread that does not block it (tracebridge's threads block it).
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.signal.restype = ctypes.c_void_p
        libc.signal.argtypes = (ctypes.c_int, ctypes.c_void_p)
        if libc.signal(signal.SIGTERM, None) != ctypes.c_void_p(-1).value:  # (None: SIG_DFL; -1: SIG_ERR)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1.0)
    except Exception:
        pass
    os._exit(128 + signal.SIGTERM)  # (every thread blocks SIGTERM: the shell's status for it)


def stop_ended() -> None:
    """Called as every ``stop()`` ends: a SIGTERM that came during it takes effect now, on whichever
    thread the stop ran."""
    global _die_after_stop
    if not _die_after_stop or stopping:
        return
    _die_after_stop = False
    with contextlib.suppress(ValueError, OSError):
        _die()  # (off the main thread too: the main thread may wait where no handler runs)


_shutdown: Callable[[float], object] | None = None


def install(shutdown: Callable[[float], object], watch: bool = False) -> None:
    """Put the handler on SIGTERM if it is at its default and this is the main thread; on SIGTERM it
    calls ``shutdown(timeout)`` (``tracebridge.shutdown``). ``watch``: with the watchdog (in a child
    process: see the module's doc)."""
    global _shutdown
    _shutdown = shutdown
    if not RT.config.sigterm or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
        if watch and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            _arm()
    except (ValueError, OSError):  # (an embedded interpreter without signals)
        pass


def uninstall() -> None:
    """Back to the default disposition, if the handler is still tracebridge's; the wakeup fd unset if it
    is the watchdog's (which stays, idle, for the next session: a library may hold its number to put
    back, so its pipe stays open)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass
    if _watch_fds is not None:
        _unset_wakeup(_watch_fds[1])


def default_in_child() -> None:
    """In a forked child, first: SIGTERM back to its default if the handler is tracebridge's (the
    child's session puts it back as it begins), and nothing of the parent's watchdog: its thread is not
    here, and its pipe is the parent's (a signal written there would reach the parent's watchdog)."""
    global _began, _claim, _finished, _die_after_stop, stopping
    _began, _claim, _finished, _die_after_stop = threading.Event(), threading.Lock(), threading.Event(), False
    stopping = 0  # (a stop under way on another thread of the parent is not this process's)
    with contextlib.suppress(ValueError, OSError, AttributeError):
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _forget_in_child()


# -- the watchdog (child processes) ------------------------------------------------------------------

_watch_fds: tuple[int, int] | None = None  # (read end, write end: the wakeup fd)


def _unset_wakeup(write_fd: int) -> None:
    """The wakeup fd back to none, if it is ``write_fd`` (another one stays)."""
    with contextlib.suppress(ValueError, OSError):
        current = signal.set_wakeup_fd(-1)
        if current not in (-1, write_fd):
            signal.set_wakeup_fd(current, warn_on_full_buffer=False)


def _arm() -> None:
    """The watchdog on (once per process: later sessions set its wakeup fd again, if none is set)."""
    global _watch_fds
    if not hasattr(signal, "pthread_sigmask"):
        return
    if _watch_fds is not None:
        with contextlib.suppress(ValueError, OSError):
            current = signal.set_wakeup_fd(_watch_fds[1], warn_on_full_buffer=False)
            if current not in (-1, _watch_fds[1]):  # (a library's: it stays)
                signal.set_wakeup_fd(current, warn_on_full_buffer=False)
        return
    try:
        read_fd, write_fd = os.pipe()
    except OSError:
        return
    try:
        os.set_blocking(write_fd, False)
        previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        previous = None
    if previous != -1:  # (a wakeup fd of the program's or a library's stays, and there is no watchdog)
        with contextlib.suppress(ValueError, OSError):
            if previous is not None:
                signal.set_wakeup_fd(previous, warn_on_full_buffer=False)
        for fd in (read_fd, write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        return
    _watch_fds = (read_fd, write_fd)
    watchdog = threading.Thread(target=_watch, args=(read_fd,), name="tracebridge-sigterm-watch", daemon=True)
    try:
        with signals_held():
            watchdog.start()
    except RuntimeError:  # (no thread can start: no watchdog)
        _unset_wakeup(write_fd)
        _watch_fds = None
        for fd in (read_fd, write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _forget_in_child() -> None:
    """In a forked child: the parent's watchdog pipe (its thread is not here) unset and closed."""
    global _watch_fds
    fds, _watch_fds = _watch_fds, None
    if fds is None:
        return
    _unset_wakeup(fds[1])
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _watch(read_fd: int) -> None:
    with contextlib.suppress(Exception):
        while True:
            try:
                data = os.read(read_fd, 512)
            except InterruptedError:
                continue
            if not data:
                return
            if signal.SIGTERM in data:
                _sigterm_came()


def _sigterm_came() -> None:
    if _began.wait(GRACE):
        return  # (the main thread runs the handler)
    if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
        return  # (the program's handler now: when it runs is the program's business)
    deadline = time.monotonic() + SIGTERM_DEADLINE
    while stopping and time.monotonic() < deadline:  # (a stop under way: its end is the trace's)
        time.sleep(0.01)
    _finish_then_die()


# -- fork and tracebridge's own threads ---------------------------------------------------------------

_forking = threading.local()  # (the mask each forking thread had: threads may fork at once)


def hold_for_fork() -> None:
    """Before ``fork()``: a SIGTERM that reaches the child before its interpreter is ready would be lost
    (CPython forgets signals that arrive before the child's after-fork steps), and the child would live
    on, so the forking thread holds SIGTERM back; the child gets it (pending) once it records."""
    _forking.mask = None
    if not hasattr(signal, "pthread_sigmask"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            _forking.mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    except (ValueError, OSError):
        pass


def release_after_fork() -> None:
    """After ``fork()``, in the parent and in the child (once it records): SIGTERM as it was."""
    mask = getattr(_forking, "mask", None)
    _forking.mask = None
    if mask is not None:
        with contextlib.suppress(ValueError, OSError):
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Around starting tracebridge's own threads: SIGTERM and SIGINT blocked in the starting thread, so
    that the new thread is born blocking them (a thread inherits its creator's mask) and the kernel
    delivers them to the application's threads only; one that arrives meanwhile waits, and comes when
    the mask is restored. (A thread that blocked them only once it ran could receive one first, and
    then Python, which runs handlers on the main thread, would run it only when the main thread runs
    Python code again: never, for a pool worker blocked waiting for its next task.)"""
    old = None
    if hasattr(signal, "pthread_sigmask"):
        with contextlib.suppress(ValueError, OSError):
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        if old is not None:
            with contextlib.suppress(ValueError, OSError):
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
