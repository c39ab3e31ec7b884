"""``tracebridge.read``: the events of a trace file we wrote, Perfetto or Chrome JSON."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ._model import Event, EventSink, ReadLimits, TraceFile, TraceReadError

__all__ = ["EventSink", "ReadLimits", "TraceReadError", "detect_format", "feed", "read", "read_trace"]


def detect_format(path: str | os.PathLike[str]) -> str:
    """``"perfetto"`` or ``"json"``, from the first bytes of the file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(1 << 16)
    except FileNotFoundError:
        raise TraceReadError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TraceReadError(f"{p}: is a directory") from None
    except OSError as exc:
        raise TraceReadError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise TraceReadError(f"{p}: empty file, not a trace")
    from .sinks.perfetto.reader import starts_with_packet  # (here: import tracebridge stays light)

    # 0x0a starts a Perfetto trace, but it is also a newline before a JSON document: look further.
    if head[:1] == b"\x0a" and starts_with_packet(head):
        return "perfetto"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    if head[:1] == b"\x0a":
        return "perfetto"  # a packet longer than the first 64 KiB, or a damaged one: the reader says which
    raise TraceReadError(f"{p}: not a trace (neither Perfetto protobuf nor Chrome JSON)")


def read(path: str | os.PathLike[str], limits: ReadLimits | None = None) -> list[Event]:
    """The events in a trace file written by tracebridge (Perfetto protobuf or Chrome JSON), in start
    order: the same records an in-memory session gives in ``Session.events``. A Perfetto trace cut off
    mid-packet (a killed process) gives the events of its complete packets.

    Raises :class:`TraceReadError` (one line: what and where) for a file that is missing, empty, not a
    trace, malformed past some point, or that would cost more to read than ``limits`` allow (a zip
    bomb); :func:`read_trace` gives what could be read of such a file, with its problems.

    .. versionadded:: 0.1
    """
    trace = read_trace(path, limits=limits)
    why = trace.unreadable(partial=False)
    if why is not None:
        raise TraceReadError(f"{path}: {why}")
    return trace.events


def read_trace(
    path: str | os.PathLike[str],
    progress: Callable[[int, int], None] | None = None,
    limits: ReadLimits | None = None,
    sink: EventSink | None = None,
) -> TraceFile:
    """Events, stats, problems and notes of a trace file, as far as it reads. ``progress(done, total)``
    is called now and then while a Perfetto trace is read. Reading costs time linear in the file's size:
    past ``limits`` (default :class:`ReadLimits`) it stops, with a problem that says so.

    Memory: what is kept, the events (about 0.5 KB each). With a ``sink`` (an :class:`EventSink`, such as
    :class:`tracebridge.analysis.SummaryBuilder`), none are kept: each goes to the sink as it completes,
    ``TraceFile.events`` stays empty and ``TraceFile.shown_events`` counts them; a Perfetto trace of any
    size is then read in bounded memory (the events wait, sorted, in temporary files). A Chrome JSON
    trace is one document and is read whole either way."""
    fmt = detect_format(path)
    if progress is not None:
        progress = _CallerProgress(progress)
    if sink is not None:
        sink = _CallerSink(sink)
    try:
        if fmt == "json":
            from .sinks.chrome import read_chrome_json

            trace = read_chrome_json(path)
            if sink is not None:
                feed(trace.events, sink)
                trace.shown_events, trace.events = len(trace.events), []
            return trace
        from .sinks.perfetto.reader import read_perfetto

        return read_perfetto(path, progress, limits, sink)
    except (TraceReadError, KeyboardInterrupt):
        raise
    except _CallerError as exc:  # the caller's own callback or sink raised (to cancel, say): its exception
        raise exc.raised from None
    except MemoryError:
        raise TraceReadError(f"{path}: ran out of memory reading it") from None
    except Exception as exc:  # a reader's bug on a file nobody foresaw: still one line, never a traceback
        raise TraceReadError(
            f"{path}: internal error while reading ({type(exc).__name__}: {exc}); please report it"
        ) from exc


def feed(events: Iterable[Event], sink: EventSink) -> None:
    """Give ``events`` (of a session or a trace read whole) to ``sink`` as a streamed read would: slices
    with their self time and depth, found from how they nest on their thread (a streamed read nests
    activities and slices of named tracks as their tracks do; here, by thread too)."""
    groups: dict[tuple[Any, ...], list[Event]] = {}
    for ev in events:
        if ev.kind in ("span", "activity"):
            groups.setdefault((ev.pid, ev.thread_id, ev.kind, ev.track, ev.overlapping), []).append(ev)
        else:
            sink.event(ev, None, -1, 0)
    for slices in groups.values():
        # Enclosing slices first: by start, then the longest (one never ended is the longest of all).
        slices.sort(key=lambda e: (e.start_ns, -(e.end_ns if e.end_ns is not None else _NEVER)))
        stack: list[list[Any]] = []  # [end, event, children's time]
        for ev in slices:
            end = ev.end_ns if ev.end_ns is not None else _NEVER
            while stack and stack[-1][0] < end:  # (it does not enclose this one)
                _finish(stack, sink)
            stack.append([end, ev, 0])
        while stack:
            _finish(stack, sink)


_NEVER = 1 << 80  # the end of a slice that never ended: after every other


def _finish(stack: list[list[Any]], sink: EventSink) -> None:
    end, ev, children_ns = stack.pop()
    if end == _NEVER:
        sink.event(ev, None, len(stack), children_ns)
        return
    duration = end - ev.start_ns
    if stack:
        stack[-1][2] += duration
    sink.event(ev, duration - children_ns, len(stack), children_ns)


class _CallerError(Exception):
    def __init__(self, raised: BaseException) -> None:
        super().__init__(raised)
        self.raised = raised


class _CallerProgress:
    """The caller's progress callback, whose exceptions are told apart from the reader's own."""

    def __init__(self, callback: Callable[[int, int], None]) -> None:
        self.callback = callback

    def __call__(self, done: int, total: int) -> None:
        try:
            self.callback(done, total)
        except Exception as exc:
            raise _CallerError(exc) from exc


class _CallerSink:
    """The caller's event sink, whose exceptions are told apart from the reader's own."""

    def __init__(self, sink: EventSink) -> None:
        self.sink = sink

    def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None:
        try:
            self.sink.event(ev, self_ns, depth, covered_ns)
        except Exception as exc:
            raise _CallerError(exc) from exc
