"""The span API's other events: instants, counter samples, activities (which may begin and end on
different threads), flow ids, and back-traces on demand."""

from __future__ import annotations

import random
from typing import Any

from . import _safety
from ._backtrace import stack_frames
from ._intake import admit, snapshot_metadata
from ._model import NameOrFactory, Record
from ._recorder import source_failed
from ._recorder.runtime import RT, current, now_ns, thread_state
from ._sanitize import needs_snapshot

_getrandbits = random.getrandbits

__all__ = ["activity_end", "activity_start", "backtrace", "counter", "flow", "instant"]


def _ids() -> tuple[int, int]:
    parent = current.get()
    return (0, 0) if parent is None else (parent.trace_id, parent.span_id)


def instant(name: NameOrFactory, /, level: int = 1, **metadata: Any) -> None:
    """Record an instant event (a point in time) on the thread's track, or on ``track=`` if given.
    ``category=`` works as for spans.

    .. versionadded:: 0.1
    """
    if level > RT.level:
        return
    try:
        if type(name) is not str:
            name = name() if callable(name) else _safety.safe_str(name)
        t = now_ns()
        trace_id, span_id = _ids()
        rec = Record("instant", name, t, t, level, metadata or None, trace_id=trace_id, span_id=span_id)
        pipe = RT.pipeline
        if pipe is not None and not admit(pipe, rec):
            return
        if metadata and needs_snapshot(metadata):
            rec.metadata = snapshot_metadata(metadata)
        thread_state().push(rec)
        bridge = RT.bridge
        if bridge is not None:
            bridge.instant(rec)
    except Exception as exc:
        source_failed("instant", "instant", exc)


def counter(name: str, value: float, unit: str | None = None) -> None:
    """Record a sample of the counter ``name`` (one counter track per name) while a session is active.
    ``unit`` is a free-form name; ``"ns"``, ``"count"`` and ``"bytes"`` are shown as Perfetto's own
    units. Integers beyond 64 bits are recorded as floats.

    .. versionadded:: 0.1
    """
    if not RT.level:
        return
    try:
        if type(value) is not int and type(value) is not float:
            value = int(value) if isinstance(value, bool) else float(value)
        if type(value) is int and not -(1 << 63) <= value < (1 << 63):
            value = float(value)  # Perfetto counters hold int64 or double
        t = now_ns()
        md = {"unit": str(unit)} if unit is not None else None
        rec = Record("counter", str(name), t, t, 1, md, value=value)
        thread_state().push(rec)
    except Exception as exc:
        source_failed("counter", "counter", exc)


def activity_start(name: NameOrFactory, /, level: int = 1, **metadata: Any) -> int:
    """Begin an activity: a span that may end on another thread. Returns its id for
    :func:`activity_end` (0 when the level is off, which ``activity_end`` ignores).

    .. versionadded:: 0.1
    """
    session = RT.session
    if level > RT.level or session is None:
        return 0
    try:
        if type(name) is not str:
            name = name() if callable(name) else _safety.safe_str(name)
        trace_id, _ = _ids()
        rec = Record("activity", name, now_ns(), None, level, metadata or None, trace_id=trace_id)
        pipe = RT.pipeline
        if pipe is not None and not admit(pipe, rec):
            return 0
        rec.span_id = _getrandbits(64)
        if metadata and needs_snapshot(metadata):
            rec.metadata = snapshot_metadata(metadata)
        rec.thread = thread_state().info
        aid = _getrandbits(63) | 1
        return aid if session.open_activity(aid, rec) else 0
    except Exception as exc:
        source_failed("activity_start", "activity", exc)
        return 0


def activity_end(activity_id: int, **metadata: Any) -> None:
    """End the activity ``activity_id`` (from :func:`activity_start`) on any thread, adding metadata.

    .. versionadded:: 0.1
    """
    if not activity_id:
        return
    session = RT.session
    if session is None:
        return
    try:
        rec = session.close_activity(activity_id)
        if rec is None:
            session.count_drop("unknown_activity", "activity")
            return
        rec.end_ns = now_ns()
        if metadata:
            if needs_snapshot(metadata):
                metadata = snapshot_metadata(metadata)
            rec.metadata = {**(rec.metadata or {}), **metadata}
        thread_state().push(rec)
    except Exception as exc:
        source_failed("activity_end", "activity", exc)


def flow() -> int:
    """A new flow id. Pass it as ``flows=[fid]`` to the spans that start and continue the flow and as
    ``terminating_flows=[fid]`` to the span that ends it: Perfetto draws arrows between them.

    .. versionadded:: 0.1
    """
    return _getrandbits(64) or 1


def backtrace(skip: int = 0) -> str:
    """The calling thread's stack as text, outermost frame first, one ``function (file:line)`` a line
    (TraceMe's ``back_trace``). ``skip`` leaves out that many innermost frames.

    .. versionadded:: 0.1
    """
    return "\n".join(f"  {f}" for f in stack_frames(skip + 1))


# Re-exported here because TraceMe keeps them beside the span API.
