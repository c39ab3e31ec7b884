"""Records to events: what the writer makes of each queued record (names split from TraceMe's
encoded form and cleaned, metadata sanitized and scrubbed, code locations, tracks of asyncio tasks,
the trace clock)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .. import _codec, _safety
from .._model import (
    CODE_LOCATIONS,
    RESERVED_KEYS,
    ErrorInfo,
    Event,
    SpanRecord,
    ThreadInfo,
)
from .._sanitize import Counts, Limits, clean_str, may_hold_secret, sanitize_metadata, scrub_text
from ..sinks.lines import TraceLines
from .runtime import (
    CompactSpan,
)

#: Tracks of their own for asyncio tasks, at most, per recording (see ``EventConversion._task_track``).
MAX_TASK_TRACKS = 256


class EventConversion:
    """The record -> event part of a :class:`~tracebridge._recorder.session.Session` (a mixin: the
    writer thread calls it for every record it takes)."""

    clock_offset: int
    limits: Limits
    lines: TraceLines | None
    _make_ids: bool
    _writer_counts: Counts
    _task_tracks: set[str]

    def _task_track(self, task: Any, info: ThreadInfo) -> str | None:
        """The track of an asyncio task's spans that overlap other tasks' (``None``: the thread's
        overlap lanes, once :data:`MAX_TASK_TRACKS` tasks have a track: a server runs tasks without end,
        and a trace is no use with a track for each)."""
        name = clean_str(scrub_text(f"{_safety.safe_str(task)} ({info.name})", self.limits), 1024)
        tracks = self._task_tracks
        if name not in tracks:
            if len(tracks) >= MAX_TASK_TRACKS:
                return None
            tracks.add(name)
        return name

    def _compact_event(self, rec: CompactSpan, info: ThreadInfo) -> Event:
        """The event of a span queued as a CompactSpan: what ``_to_event`` makes of a span that carries
        nothing but its name, level and times (names that need work take that path)."""
        name, level, start, end = rec
        if len(name) > 1024 or not name.isascii() or "\x00" in name or name.endswith("#"):
            return self._to_event(SpanRecord.of(name, level, start, end), info)
        if self.limits.secret_keys is not None and may_hold_secret(name):
            name = scrub_text(name, self.limits, self._writer_counts)
        where = CODE_LOCATIONS.get(name)
        md = (
            {}
            if where is None
            else {"code.filepath": where[0], "code.lineno": where[1], "code.function": where[2]}
        )
        off = self.clock_offset
        return Event("span", name, start + off, end + off, level, md, info.tid, info.name)  # (to thread_name)

    def _to_event(self, rec: Any, info: ThreadInfo) -> Event:
        counts = self._writer_counts
        name = rec.name
        if type(name) is not str:
            name = _safety.safe_str(name)
        md: dict[str, Any] = rec.metadata or {}
        categories: tuple[str, ...] = ()
        track = None
        flows: tuple[int, ...] = ()
        terminating: tuple[int, ...] = ()
        if md:
            md = dict(md)
            if "category" in md:
                categories = _as_strings(md.pop("category"))
            if "track" in md:
                t = md.pop("track")
                track = None if t is None else clean_str(_safety.safe_str(t), 1024)
            if "flows" in md:
                flows = _as_ids(md.pop("flows"))
            if "terminating_flows" in md:
                terminating = _as_ids(md.pop("terminating_flows"))
        if name.endswith("#") and _codec.maybe_encoded(name):
            name, encoded = _codec.decode(name)
            if encoded:
                md = {**encoded, **md}
        if len(name) > 1024 or not name.isascii() or "\x00" in name:
            name = clean_str(name, 1024, counts)
        limits = self.limits
        if limits.secret_keys is not None:
            name = scrub_text(name, limits, counts)
        error = rec.error
        if error is not None and limits.secret_keys is not None:
            error = scrub_error(error, limits, counts)
        if limits.secret_keys is not None:
            if track is not None:
                track = scrub_text(track, limits, counts)
            if categories:
                categories = tuple(scrub_text(c, limits, counts) for c in categories)
        if md:
            md = sanitize_metadata(md, self.limits, counts)
            if not RESERVED_KEYS.isdisjoint(md):  # the file's own fields: the metadata's go beside them
                md = {f"attribute.{k}" if k in RESERVED_KEYS else k: v for k, v in md.items()}
        off = self.clock_offset
        end = rec.end_ns
        kind = rec.kind
        if kind == "span":
            if rec.overlapping and track is None:
                task = getattr(rec, "_task", None)
                if task is not None:  # an asyncio task's spans that overlap others': a track per task
                    track = self._task_track(task, info)
            where = CODE_LOCATIONS.get(name)
            if where is not None and "code.filepath" not in md:
                md = {**md, "code.filepath": where[0], "code.lineno": where[1], "code.function": where[2]}
            parent = rec.parent
            if self._make_ids or self.lines is not None:  # trace lines carry ids too
                trace_id, span_id = rec.trace_id, rec.span_id
                parent_id = parent.span_id if parent is not None else 0
            else:  # the ids the application asked for, if any (trace files do not hold them)
                trace_id, span_id = rec.ids_made
                parent_id = parent.ids_made[1] if parent is not None else 0
            value = unit = source = None
            overlapping, begun = rec.overlapping, rec.begun
        else:
            value, source = rec.value, rec.source
            unit = md.pop("unit", None) if kind == "counter" and md else None
            trace_id, span_id, parent_id = rec.trace_id, rec.span_id, 0
            overlapping = begun = False
        # Positional, one field a line (keywords cost this loop about 220 ns an event).
        return Event(
            kind,  # kind
            name,  # name
            rec.start_ns + off,  # start_ns
            None if end is None else end + off,  # end_ns
            rec.level,  # level
            md,  # metadata
            info.tid,  # thread_id
            info.name,  # thread_name
            error,  # error
            categories,  # categories
            track,  # track
            flows,  # flows
            terminating,  # terminating_flows
            value,  # value
            unit,  # unit
            source,  # source
            trace_id,  # trace_id
            span_id,  # span_id
            parent_id,  # parent_id
            overlapping,  # overlapping
            rec.adjusted_count,  # adjusted_count
            begun,  # begun
        )


def scrub_error(error: ErrorInfo, limits: Limits, counts: Counts) -> ErrorInfo:
    """``error`` with the credentials in its messages (and its causes') scrubbed (itself if none)."""
    message = scrub_text(error.message, limits, counts)
    cause = None if error.cause is None else scrub_error(error.cause, limits, counts)
    if message is error.message and cause is error.cause:
        return error
    return replace(error, message=message, cause=cause)


def _as_strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (clean_str(value, 256),) if value else ()
    try:
        return tuple(clean_str(_safety.safe_str(v), 256) for v in value if v is not None and v != "")
    except TypeError:
        return (clean_str(_safety.safe_str(value), 256),)


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        value = (value,)
    out = []
    try:
        for v in value:
            if isinstance(v, int) and 0 < v < (1 << 64):
                out.append(int(v))
    except TypeError:
        pass
    return tuple(out)
