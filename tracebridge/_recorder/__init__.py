"""Recording sessions: levels, the writer thread, and the process lifecycle.

Sources queue records on their thread's deque (see ``runtime.py``). The writer thread wakes every
``flush_interval`` seconds, pops what each thread queued, turns records into :class:`~tracebridge.Event`
objects (sanitized, secrets scrubbed) and hands them to the session's sink. A full queue drops (and
counts) or waits, as ``on_full`` says; the writer marks every gap in the trace.

* ``session.py``: :class:`Session`, its writer thread, back-pressure and sink back-off;
* ``convert.py``: what the writer makes of each record;
* ``lifecycle.py``: ``configure``, ``start``, ``stop`` and the implicit sessions; the exit hook;
* ``children.py``: child processes (fork, spawn, forkserver, pools) record into the trace too;
* ``exits.py``: SIGTERM finishes the trace before the process dies of it;
* ``runtime_metrics.py``: ``configure(runtime=True)``: the process's counters and the collector's pauses.
"""

from __future__ import annotations

from . import children as _children  # noqa: F401  (registers the fork handlers)
from .lifecycle import (
    configure,
    current_session,
    flush,
    record_into,
    shutdown,
    start,
    stats,
    stop,
)
from .session import OutputFormat, Session, source_failed

__all__ = [
    "OutputFormat",
    "Session",
    "configure",
    "current_session",
    "flush",
    "record_into",
    "shutdown",
    "source_failed",
    "start",
    "stats",
    "stop",
]
