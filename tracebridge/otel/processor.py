"""OpenTelemetry spans into tracebridge's recordings: the span processors (Perfetto file, trace lines)
and the exporter, and the records they queue (converted on the writer thread)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from .. import _safety
from .._accel import speedups
from .._model import Deferred, ErrorInfo, Frame, Record, SpanRecord
from .._recorder import Session, configure, source_failed
from .._recorder.runtime import RT, revive, thread_state
from .._recorder.targets import Target
from ._shared import BRIDGE_SCOPE, bridged_events, open_spans, plain

#: Metadata keys the recorder reads as instructions (tracks, flows, categories): attributes of these
#: names are kept under ``attribute.<name>``.
_RESERVED = frozenset({"category", "track", "flows", "terminating_flows"})
_TRACEBACK_FRAME = re.compile(r'^\s*File "(?P<file>.*)", line (?P<line>\d+), in (?P<function>.*)$')


def frames_from_stacktrace(text: str) -> tuple[Frame, ...]:
    """The frames of the last exception in a Python traceback text (``exception.stacktrace`` as the
    OpenTelemetry SDK writes it), outermost first. Text that is not a Python traceback gives none."""
    block = text.rsplit("Traceback (most recent call last):", 1)[-1]
    frames = []
    for line in block.splitlines():
        m = _TRACEBACK_FRAME.match(line)
        if m is not None:
            frames.append(Frame(m["function"], m["file"], int(m["line"])))
    return tuple(frames)


def _root(trace_id: int, span_id: int) -> SpanRecord:
    """A stand-in for a span that is not recorded here (a remote or unrecorded parent): its ids."""
    rec: SpanRecord = SpanRecord.of("", 0, 0, 0, trace_id=trace_id, span_id=span_id)
    return rec


class _Finished(Deferred):
    """An ended OpenTelemetry span, queued as the fields the trace needs: the writer thread converts it
    (:meth:`materialize`), so that the application's thread only copies and queues it. Copying (rather
    than keeping the SDK's span) lets the span and its locks, bounded containers and context go at once:
    queued spans would otherwise keep a dozen objects each for the garbage collector to walk."""

    __slots__ = (
        "announced",
        "attributes",
        "end_time",
        "events",
        "level",
        "links",
        "name",
        "overlapping",
        "parent_id",
        "resource",
        "scope",
        "span_id",
        "span_kind",
        "start_time",
        "status",
        "trace_id",
        "track",
    )
    kind = "span"

    def __init__(
        self,
        span: ReadableSpan,
        level: int,
        overlapping: bool,
        track: str | None = None,
        announced: bool = False,
        bridged: list[Any] | None = None,
    ) -> None:
        ctx = span.context
        parent = span.parent
        self.name = span.name
        self.trace_id = ctx.trace_id if ctx is not None else 0
        self.span_id = ctx.span_id if ctx is not None else 0
        self.parent_id = parent.span_id if parent is not None else 0
        self.start_time = span.start_time
        self.end_time = span.end_time
        self.attributes = plain(span, "_attributes", "_dict", "attributes")
        events = plain(span, "_events", "_dq", "events") or ()
        # (Events the bridge added for tracebridge's own instants: recorded once, as those.)
        if bridged:
            mine = {id(e) for e in bridged}  # (the objects are alive: the ids are theirs)
            self.events = tuple(e for e in events if id(e) not in mine)
        else:
            self.events = tuple(events)
        self.links = tuple(plain(span, "_links", "_dq", "links") or ())
        kind = span.kind
        self.span_kind = None if kind is SpanKind.INTERNAL else kind.name  # (a name, for the writer)
        status = span.status
        self.status = (status.status_code, status.description)
        scope = span.instrumentation_scope
        self.scope = scope.name if scope is not None else None
        self.resource = span.resource
        self.level = level
        self.overlapping = overlapping
        self.track = track
        self.announced = announced

    def materialize(self, session: Session) -> list[Any]:
        if not self.span_id or self.start_time is None:
            return []
        start = _local_ns(session, self.start_time)
        end_time = self.end_time
        rec: SpanRecord = (_LateEnd if self.announced else SpanRecord).of(
            self.name,
            self.level,
            start,
            max(start, _local_ns(session, end_time)) if end_time else start,
            parent=_root(self.trace_id, self.parent_id) if self.parent_id else None,
            overlapping=self.overlapping,
            trace_id=self.trace_id,
            span_id=self.span_id,
        )
        instants = self._fill(rec, session)
        if self.track is not None:
            assert rec.metadata is not None
            rec.metadata["track"] = self.track
            for inst in instants:
                inst.metadata = {**(inst.metadata or {}), "track": self.track}
        pipe = session.pipeline
        if pipe is not None and not self.announced and not pipe.admit(rec):
            return []  # (an announced span is in the file already: its end must follow)
        _name_process(session, self.resource)
        return [rec, *instants]

    def _fill(self, rec: SpanRecord, session: Session) -> list[Record]:
        """Metadata, failure and flows of ``rec``; the span's events as instants."""
        md: dict[str, Any] = dict(self.attributes or ())
        if not _RESERVED.isdisjoint(md):
            md = {f"attribute.{k}" if k in _RESERVED else k: v for k, v in md.items()}
        if self.span_kind is not None:
            md["otel.kind"] = self.span_kind
        code, description = self.status
        if code is not StatusCode.UNSET:
            md["otel.status"] = code.name
            if description:
                md["otel.status_description"] = description
        if self.scope:
            md["otel.scope"] = self.scope
        # Every span carries its own span id as a flow id (so the file keeps it); a span that links to
        # it carries the same id, and Perfetto draws an arrow from the linked span to it.
        flows = [rec.span_id]
        for link in self.links:
            if link.context is not None and link.context.span_id:
                flows.append(link.context.span_id)
        md["flows"] = flows
        instants: list[Record] = []
        for event in self.events:
            attrs = dict(plain(event, "_attributes", "_dict", "attributes") or ())
            error = None
            if event.name == "exception":  # the span's failure, and the instant's
                stacktrace = attrs.pop("exception.stacktrace", "")
                error = rec.error = ErrorInfo(
                    _safety.safe_str(attrs.pop("exception.type", "Exception")),
                    _safety.safe_str(attrs.pop("exception.message", "")),
                    frames_from_stacktrace(stacktrace) if isinstance(stacktrace, str) else (),
                )
            t = _local_ns(session, event.timestamp)
            inst = Record("instant", event.name, t, t, rec.level, attrs or None, error=error)
            inst.trace_id, inst.span_id = rec.trace_id, rec.span_id
            instants.append(inst)
        if rec.error is None and code is StatusCode.ERROR:
            rec.error = ErrorInfo("ERROR", description or "")
        # No snapshot: the SDK's attribute values are immutable (str, bool, int, float, tuples of them)
        # and these dicts are ours; the writer sanitizes them.
        rec.metadata = md
        return instants


class _LateEnd(SpanRecord):
    """The end of an OpenTelemetry span that was written as begun while it ran."""

    __slots__ = ()
    begun = True


#: Spans written as begun while they ran (see :func:`_announce`), by span id.
_announced: set[int] = set()
#: Makes "announce a span" and "end it" exclusive: a span is either announced then ended, or ended.
_announce_lock = threading.Lock()


def _announce(session: Session) -> list[tuple[SpanRecord, Any]]:
    """Each writer round: the OpenTelemetry spans of ``session`` that have run for longer than a round,
    written now as begun on their thread's track, so that a process killed before they end still shows
    them. (They are on their thread's stack: everything above them began later and is still open.)"""
    if session.format != "perfetto":
        return []  # (a JSON document or memory has no use for it: they hold complete spans only)
    cutoff = time.time_ns() - int(session.config.flush_interval * 1e9)
    out = []
    for span_id, (span, st, _, began_in, level) in list(open_spans.items()):
        if began_in is not session or span_id in _announced or span.start_time > cutoff:
            continue
        with _announce_lock:
            if span_id not in open_spans:
                continue  # it ended meanwhile
            _announced.add(span_id)
        out.append((_begun_record(session, span, span_id, level, overlapping=False), st.info))
    return out


def _begun_record(session: Session, span: Any, span_id: int, level: int, *, overlapping: bool) -> SpanRecord:
    """A running OpenTelemetry span as a record begun only: on its thread's track (announced while it
    runs, see :func:`_announce`) or on a track of its own (still open when the recording stops)."""
    rec: SpanRecord = SpanRecord.of(
        span.name,
        level,
        _local_ns(session, span.start_time),
        None,
        overlapping=overlapping,
        trace_id=span.get_span_context().trace_id,
        span_id=span_id,
    )
    return rec


def _still_open(session: Session) -> list[tuple[SpanRecord, Any]]:
    """The OpenTelemetry spans of ``session`` still running (it is stopping), not yet written as begun:
    records begun only (on a track of their own: what they enclose is unknown)."""
    return [
        (_begun_record(session, span, span_id, level, overlapping=True), st.info)
        for span_id, (span, st, _, began_in, level) in list(open_spans.items())
        if began_in is session and span_id not in _announced
    ]


class _Recorder:
    """Records OTel spans in the recording :meth:`session` gives: placed when they begin (on their
    thread's stack, beside tracebridge's spans), queued as they are when they end."""

    def __init__(self, trace_level: int) -> None:
        if isinstance(trace_level, bool) or not isinstance(trace_level, int) or trace_level < 1:
            raise ValueError(f"trace_level must be an integer >= 1, got {trace_level!r}")
        self.trace_level = trace_level
        #: Spans that ended while nothing here was recording them.
        self.dropped = 0
        #: The session :meth:`session` gave last: while it is the active one, it gives it again.
        self.known: Session | None = None
        #: The instrumentation scope seen last that is not the bridge's.
        self.plain_scope: Any = None

    def session(self) -> Session | None:
        raise NotImplementedError

    def start(self, span: Any) -> None:
        if self.trace_level > RT.level or _safety.inside.get():
            return
        session = RT.session
        if session is None or session is not self.known:
            session = self.known = self.session()
            if session is None:
                return
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not self.plain_scope:
            if scope is not None and scope.name == BRIDGE_SCOPE:
                return  # the twin of a tracebridge span: tracebridge records the original
            self.plain_scope = scope
        span_id = span.get_span_context().span_id
        if span_id in open_spans:
            return  # another processor records it (a trace file and trace lines: one record)
        st = thread_state()
        st.deferred = True
        open_spans[span_id] = (span, st, threading.get_ident(), session, self.trace_level)
        st.stack.append(span)
        if _still_open not in session.open_span_sources:
            session.add_open_spans(_still_open)
            session.round_sources.append(_announce)

    def end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        span_id = ctx.span_id
        bridged = bridged_events.pop(span_id, None) if bridged_events else None
        with _announce_lock:
            entry = open_spans.pop(span_id, None)
            announced = span_id in _announced
            if announced:
                _announced.discard(span_id)
        if entry is None:
            return  # began before anything here was recording, or another processor wrote it
        began, st, ident, session, level = entry
        stack = st.stack
        overlapping = False
        if ident == threading.get_ident() and stack and stack[-1] is began:
            stack.pop()
        else:  # ends out of order, or on another thread: a track of its own
            with contextlib.suppress(ValueError):
                stack.remove(began)
            overlapping = True
        if session.stopped or RT.session is not session:
            self.dropped += 1
            return
        if announced:  # its end goes where its beginning is: its thread's sequence and track
            if st.dead:
                revive(st)
            st.push_required(_Finished(span, level, False, announced=True, bridged=bridged))
            return
        if st.dead:  # its thread has ended since
            st = thread_state()
            st.deferred = True
        # (Compiled: the copy made reading the SDK's fields where it keeps them; None for a span of
        # another shape.)
        rec = None if _copy is None or bridged else _copy(span, level, overlapping)
        st.push(_Finished(span, level, overlapping, bridged=bridged) if rec is None else rec)


def _local_ns(session: Session, epoch_ns: int) -> int:
    """An OpenTelemetry timestamp (ns since the epoch) on tracebridge's span clock."""
    return int(epoch_ns) - session.wall_offset_ns - session.clock_offset


_named: list[tuple[Any, Any]] = [(None, None)]  # the session and resource last looked at
_UNNAMED = "unknown_service"


def _name_process(session: Session, resource: Any) -> None:
    last = _named[0]
    if resource is None or (last[0] is session and last[1] is resource):
        return
    _named[0] = (session, resource)
    name = resource.attributes.get("service.name")
    # ("unknown_service" and "unknown_service:<executable>" are the SDK's when none is configured: the
    # process's own name says more.)
    if isinstance(name, str) and name and name != session.process_name and not name.startswith(_UNNAMED):
        session.rename_process(name)


#: The compiled copy of an ended span (None: the pure-Python path).
_copy: Any = None
if speedups is not None:  # what the compiled copy and the writer's compiled conversion compare with
    speedups.configure_finished(
        _Finished,
        Deferred,
        ReadableSpan,
        SpanContext,
        BoundedAttributes,
        BoundedList,
        Status,
        InstrumentationScope,
        SpanKind.INTERNAL,
        StatusCode.UNSET,
        StatusCode.OK,
        _name_process,
    )
    _copy = speedups.finished


class PerfettoSpanProcessor(SpanProcessor):
    """Writes OpenTelemetry spans into the Perfetto trace ``target`` (a file, whose recording it joins
    or starts as :class:`tracebridge.logging.PerfettoHandler` does, or a :class:`~tracebridge.Session`).

    A span is placed when it begins (on its thread's track if it nests there) and written when it ends;
    spans still open when the recording stops are written as begun only. Attributes become debug
    annotations, events instants, the last exception event the slice's back-trace, links flows. The
    session's sampling stages apply too (after the TracerProvider's sampler). Never raises into the SDK.

    .. versionadded:: 0.1
    """

    def __init__(self, target: str | os.PathLike[str] | Session, *, trace_level: int = 2) -> None:
        self._recorder = _FileRecorder(target, trace_level, "PerfettoSpanProcessor")

    @property
    def session(self) -> Session | None:
        """The session this processor records into now (``None`` while nothing records its file)."""
        return self._recorder.target.current

    @property
    def dropped(self) -> int:
        """Spans that began or ended while nothing recorded its file (or another file was recorded)."""
        return self._recorder.dropped + self._recorder.target.dropped

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            self._recorder.start(span)
        except Exception as exc:
            _safety.internal_error("PerfettoSpanProcessor.on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._recorder.end(span)
        except Exception as exc:
            source_failed("PerfettoSpanProcessor.on_end", "span", exc)

    def shutdown(self) -> None:
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._recorder.target.flush(max(0.0, timeout_millis / 1000))
        except Exception as exc:
            _safety.internal_error("PerfettoSpanProcessor.force_flush", exc, raise_in_strict=False)
            return False


class _FileRecorder(_Recorder):
    def __init__(self, target: str | os.PathLike[str] | Session, trace_level: int, who: str) -> None:
        super().__init__(trace_level)
        self.target = Target(target, trace_level, "span", who)

    def session(self) -> Session | None:
        return self.target.session()


class _ActiveRecorder(_Recorder):
    def session(self) -> Session | None:
        return RT.session


class TraceLineSpanProcessor(SpanProcessor):
    """Logs every OpenTelemetry span that ends as a trace line on the ``tracebridge.trace`` logger
    (``[TRACE] GET /users (12ms) {http.response.status_code=200}``), through the active recording's
    sampling stages. Takes the options of ``tracebridge.configure(log_lines=...)`` (``slow=``,
    ``level=``, ...) and turns trace lines on; the spans go into whatever tracebridge is recording (or
    into a recording that keeps nothing but the lines).

    .. versionadded:: 0.1
    """

    def __init__(self, *, trace_level: int = 2, **line_options: Any) -> None:
        self._recorder = _ActiveRecorder(trace_level)
        configure(log_lines=line_options or True)

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        try:
            self._recorder.start(span)
        except Exception as exc:
            _safety.internal_error("TraceLineSpanProcessor.on_start", exc)

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._recorder.end(span)
        except Exception as exc:
            source_failed("TraceLineSpanProcessor.on_end", "span", exc)

    def shutdown(self) -> None:
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            session = RT.session
            return True if session is None else session.flush(max(0.0, timeout_millis / 1000))
        except Exception as exc:
            _safety.internal_error("TraceLineSpanProcessor.force_flush", exc, raise_in_strict=False)
            return False


class PerfettoSpanExporter(SpanExporter):
    """The same output behind a ``SpanExporter``, for a ``BatchSpanProcessor``: spans arrive in
    batches after they ended, on the exporter's thread, so they cannot be placed on their threads;
    each trace's spans go on a track of its own under the process, ``trace <trace id>``, nested as
    they nest in time (spans that would cross go on further tracks of that name).

    .. versionadded:: 0.1
    """

    def __init__(self, path: str | os.PathLike[str], *, trace_level: int = 2) -> None:
        self._recorder = _FileRecorder(path, trace_level, "PerfettoSpanExporter")
        self._stopped = False

    @property
    def session(self) -> Session | None:
        """The session this exporter records into now (``None`` while nothing records its file)."""
        return self._recorder.target.current

    @property
    def dropped(self) -> int:
        """Spans exported while nothing recorded its file (or another file was recorded)."""
        return self._recorder.dropped + self._recorder.target.dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        try:
            recorder = self._recorder
            if recorder.target.session(len(spans)) is None:
                return SpanExportResult.FAILURE
            st = thread_state()
            st.deferred = True
            for span in spans:
                try:  # a span the SDK would not have made costs itself only, not its batch
                    ctx = span.context
                    if ctx is not None:
                        st.push(_Finished(span, recorder.trace_level, False, f"trace {ctx.trace_id:032x}"))
                except Exception as exc:
                    source_failed("PerfettoSpanExporter.export", "span", exc)
            return SpanExportResult.SUCCESS
        except Exception as exc:
            _safety.internal_error("PerfettoSpanExporter.export", exc)
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self._stopped = True
        self.force_flush()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._recorder.target.flush(max(0.0, timeout_millis / 1000))
        except Exception as exc:
            _safety.internal_error("PerfettoSpanExporter.force_flush", exc, raise_in_strict=False)
            return False
