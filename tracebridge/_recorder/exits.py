"""Exits: SIGTERM finishes the trace before the process dies of it.

A process whose SIGTERM is at its default disposition dies at once: no ``atexit``, no ``finally``, so the
writer's last round and the session's stats would be lost (``Pool.terminate()`` ends its workers so,
and so do service managers). While a session writes a file, tracebridge puts a handler there (only if the
disposition is the default, and only from the main thread, where Python runs signal handlers): it ends
the session under a short deadline, then restores the default and sends the signal again, so that the
process dies of SIGTERM as it would have (same exit status). A handler the program installed is left
alone, before or after: a program that installs its own after tracebridge and calls the one it replaced
gets this behaviour at the end of its own.

Child processes keep SIGTERM's default (a forked child gets it back; a spawned one never gets the handler):
a Python-level handler runs only when the main thread runs Python code, and a signal that lands just as
that thread enters a blocking call (a pool worker going back to wait for its next task, as
``Pool.terminate()`` sends it) is handled only when the call returns: never, there. About one pool in a
hundred hung so. A child ended by SIGTERM loses what it had not written (at most a writer round).

The writer thread blocks SIGTERM and SIGINT from birth (see :func:`signals_held`), so that the kernel
delivers them to a thread that runs Python's handlers promptly: the main thread, even when it is
blocked reading a pipe (a pool worker waiting for its next task).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from .runtime import RT

#: At most this long (or the session's ``timeout``, if shorter) to finish the trace on SIGTERM.
SIGTERM_DEADLINE = 5.0


#: Threads inside ``stop()`` now: a SIGTERM that lands then lets that stop finish, and the process
#: dies of the signal once it has (see :func:`stop_ended`).
stopping = 0
_die_after_stop = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _die_after_stop
    if stopping:
        _die_after_stop = True  # (this thread may be the one stopping: waiting for it would deadlock)
        return
    session = RT.session
    shutdown = _shutdown
    if session is not None and shutdown is not None:
        # On a thread of its own: the main thread may be inside tracebridge holding a lock that the
        # stop needs; then the deadline passes and the process dies as it would have.
        timeout = min(SIGTERM_DEADLINE, session.config.timeout)
        stopper = threading.Thread(target=shutdown, args=(timeout,), name="tracebridge-sigterm", daemon=True)
        try:
            stopper.start()
            stopper.join(timeout + 1.0)
        except Exception:
            pass
    _die()


def _die() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def stop_ended() -> None:
    """Called as every ``stop()`` ends: a SIGTERM that came during it takes effect now. Off the main
    thread (which alone may change a handler) the signal is sent again: the handler, on the main
    thread, then finds nothing recording and dies of it."""
    global _die_after_stop
    if not _die_after_stop or stopping:
        return
    _die_after_stop = False
    try:
        if threading.current_thread() is threading.main_thread():
            _die()
        else:
            os.kill(os.getpid(), signal.SIGTERM)
    except (ValueError, OSError):
        pass


_shutdown: Callable[[float], object] | None = None


def install(shutdown: Callable[[float], object]) -> None:
    """Put the handler on SIGTERM if it is at its default and this is the main thread; on SIGTERM it
    calls ``shutdown(timeout)`` (``tracebridge.shutdown``)."""
    global _shutdown
    _shutdown = shutdown
    if not RT.config.sigterm or not hasattr(signal, "SIGTERM"):
        return
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # (an embedded interpreter without signals)
        pass


def default_in_child() -> None:
    """In a forked child: SIGTERM back to its default, if the handler is tracebridge's (see the module's
    doc: a child process keeps the default)."""
    with contextlib.suppress(ValueError, OSError, AttributeError):
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def uninstall() -> None:
    """Back to the default disposition, if the handler is still tracebridge's."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass


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
