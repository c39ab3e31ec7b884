"""Where events go: a Perfetto protobuf file, a Chrome JSON file, or memory.

A sink receives batches of :class:`~tracebridge.Event` from the writer thread, one thread's events at a
time, and never sees the application's threads. Sinks import only the event model.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from .._model import Event, Loss, Stats, ThreadInfo, TraceFile


class Sink(Protocol):
    """What the writer thread writes to. A sink may also say ``takes_compact = True``: its ``write`` then
    gets compact events (:data:`~tracebridge._model.CompactEvent`) among the events, from the compiled
    writer step, and the events as a read-only sequence that may not be a list (an ``EventBatch``, which
    holds compact events as C values); the Perfetto writer does; others get lists of Events only."""

    #: The reason events are counted under when ``write`` does not take all of them.
    drop_reason: str

    def write(self, thread: ThreadInfo, events: list[Event], loss: Loss | None = None) -> int:
        """Take a batch of one thread's events; return how many were taken (the rest are dropped).
        ``loss``: the thread's events that were lost just before this batch (the batch may be empty
        then). A file sink marks the place, and nothing it writes after the gap may depend on state
        written before it: a loss must never hide what follows."""
        ...

    def flush(self) -> None: ...

    def close(self, stats: Stats | None = None, open_activities: Iterable[Event] = ()) -> None: ...


def write_trace(trace: TraceFile, output: str) -> None:
    """Write the events of ``trace`` (as read from a file) to ``output``: Chrome JSON for ``.json``,
    else Perfetto. Activities that had not ended are written as begun; the marks of lost events are
    written where they were, so that the converted trace still shows its losses. A trace of several
    processes (child processes appended to their parent's trace) stays so: each process is written on
    its own, then they are put together as ``tracebridge merge`` does; the stats (of all of them) go with
    the trace's own process."""
    # The trace's own process: as it says; else the one process its events name; else this one.
    pids = {ev.pid for ev in trace.events if ev.pid}
    own = trace.pid or (next(iter(pids)) if len(pids) == 1 else os.getpid())
    by_process: dict[int, tuple[list[Event], list[Event]]] = {}
    for pid in trace.processes:  # (a process that recorded nothing is in the trace all the same)
        by_process[pid] = ([], [])
    for i, group in enumerate((trace.events, trace.losses)):
        for ev in group:
            by_process.setdefault(ev.pid or own, ([], []))[i].append(ev)
    if len(by_process) <= 1:
        _write_process(trace, output, own, trace.process_name, trace.events, trace.losses, trace.stats)
        return
    import tempfile

    from .chrome import append_chrome_traces
    from .perfetto.merge import merge_traces

    json = output.lower().endswith(".json")
    suffix = ".json" if json else ".perfetto-trace"
    with tempfile.TemporaryDirectory(prefix="tracebridge-convert-") as tmp:
        parts = []
        for pid in sorted(by_process, key=lambda p: (p != own, p)):
            events, losses = by_process[pid]
            part = os.path.join(tmp, f"{pid}{suffix}")
            name = trace.processes.get(pid) or (trace.process_name if pid == own else "")
            _write_process(trace, part, pid, name, events, losses, trace.stats if pid == own else None)
            parts.append(part)
        if json:
            import shutil

            shutil.copyfile(parts[0], output)
            append_chrome_traces(output, [Path(p) for p in parts[1:]])
        else:
            merge_traces(parts, output)


def _write_process(
    trace: TraceFile,
    output: str,
    pid: int,
    process_name: str,
    events: list[Event],
    losses: list[Event],
    stats: Stats | None,
) -> None:
    from .chrome import ChromeJsonWriter
    from .perfetto.writer import PerfettoWriter

    # The session's time, for the stats slice: as the trace says, else the span of its events.
    times = [t for ev in trace.events for t in (ev.start_ns, ev.end_ns) if t is not None]
    start, end = trace.session_ns or ((min(times), max(times)) if times else (None, None))
    writer: ChromeJsonWriter | PerfettoWriter
    kind = ChromeJsonWriter if output.lower().endswith(".json") else PerfettoWriter
    writer = kind(output, pid=pid, process_name=process_name or None, start_ts=start, end_ts=end)
    by_thread: dict[tuple[int, str], list[Event]] = {}
    unfinished = []
    for ev in events:
        if ev.kind == "activity" and ev.end_ns is None:
            unfinished.append(ev)
            continue
        by_thread.setdefault((ev.thread_id, ev.thread_name), []).append(ev)
    for ev in losses:
        by_thread.setdefault((ev.thread_id, ev.thread_name), []).append(ev)
    for (tid, name), thread_events in by_thread.items():
        writer.write(ThreadInfo(pid, tid, name), thread_events)
    writer.close(stats, unfinished)
