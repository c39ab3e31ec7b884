"""OpenTelemetry integration: OTel spans into Perfetto traces and trace lines, tracebridge's samplers as
OTel samplers.

::

    from opentelemetry.sdk.trace import TracerProvider
    from tracebridge.otel import ConsistentRatioSampler, PerfettoSpanProcessor

    provider = TracerProvider(sampler=ConsistentRatioSampler(0.1))
    provider.add_span_processor(PerfettoSpanProcessor("app.perfetto-trace"))

Spans that nest on one thread are drawn on that thread's track, inside the tracebridge spans around them;
spans that overlap without nesting (asyncio tasks) and spans that end on another thread get tracks of
their own under the process. Attributes become typed debug annotations, span events instants, an
exception event the slice's back-trace, links flows; the trace id is the slice's correlation id and the
resource's ``service.name`` names the process.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import Link as OTelLink
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceState, get_current_span
from opentelemetry.util.types import Attributes

from . import _safety
from ._model import Deferred, ErrorInfo, Frame, Record, SpanRecord, new_trace_id
from ._recorder import Session, configure, record_into, source_failed
from ._runtime import RT, ThreadState, revive, thread_state
from ._sanitize import SCRUBBED, Counts, is_secret_key, sanitize_metadata
from .sampling import Adaptive, Pipeline, RateLimiter, TraceIdRatio
from .sampling._stage import RANDOMNESS_MASK, Stage, errors_named, threshold_to_th
from .sampling.limiters import KeyedRateLimiter
from .sampling.samplers import Probability
from .spans import DroppedSpan, Span

__all__ = [
    "AdaptiveSampler",
    "Bridge",
    "ConsistentRatioSampler",
    "ParentBasedAdaptiveSampler",
    "ParentBasedConsistentRatioSampler",
    "ParentBasedRateLimitingSampler",
    "PerfettoSpanExporter",
    "PerfettoSpanProcessor",
    "PipelineSampler",
    "RateLimitingSampler",
    "TraceLineSpanProcessor",
]

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


#: OpenTelemetry spans begun and not ended yet, by span id: the span, its thread's state, the thread,
#: the recording it began in, and its trace level. Shared by every processor, so that a span is recorded once.
_open: dict[int, tuple[Any, ThreadState, int, Session, int]] = {}


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
        self.attributes = _plain(span, "_attributes", "_dict", "attributes")
        events = _plain(span, "_events", "_dq", "events") or ()
        # (Events the bridge added for tracebridge's own instants: recorded once, as those.)
        if bridged:
            mine = {id(e) for e in bridged}  # (the objects are alive: the ids are theirs)
            self.events = tuple(e for e in events if id(e) not in mine)
        else:
            self.events = tuple(events)
        self.links = tuple(_plain(span, "_links", "_dq", "links") or ())
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
            attrs = dict(_plain(event, "_attributes", "_dict", "attributes") or ())
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


def _plain(obj: Any, private: str, inner: str, public: str) -> Any:
    """``obj.<public>`` (the attributes, events or links of a span or event) without the copy the SDK's
    public property makes, when its container is one we know (a plain dict or deque inside)."""
    container = getattr(obj, private, None)
    if container is not None:
        plain = getattr(container, inner, None)
        if plain is not None:
            return plain
    return getattr(obj, public, None)


class _LateEnd(SpanRecord):
    """The end of an OpenTelemetry span that was written as begun while it ran."""

    __slots__ = ()
    begun = True


#: Events the bridge added to OpenTelemetry spans that a processor of ours records, by span id: the
#: instants they stand for are recorded by tracebridge already.
_bridged_events: dict[int, list[Any]] = {}
_MAX_BRIDGED_EVENTS = 1024

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
    for span_id, (span, st, _, began_in, level) in list(_open.items()):
        if began_in is not session or span_id in _announced or span.start_time > cutoff:
            continue
        with _announce_lock:
            if span_id not in _open:
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
        for span_id, (span, st, _, began_in, level) in list(_open.items())
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

    def session(self) -> Session | None:
        raise NotImplementedError

    def start(self, span: Any) -> None:
        if _safety.inside.get() or self.trace_level > RT.level:
            return
        session = self.session()
        if session is None:
            return
        scope = getattr(span, "instrumentation_scope", None)
        if scope is not None and scope.name == BRIDGE_SCOPE:
            return  # the twin of a tracebridge span: tracebridge records the original
        span_id = span.get_span_context().span_id
        if span_id in _open:
            return  # another processor records it (a trace file and trace lines: one record)
        st = thread_state()
        st.deferred = True
        _open[span_id] = (span, st, threading.get_ident(), session, self.trace_level)
        st.stack.append(span)
        if _still_open not in session.open_span_sources:
            session.add_open_spans(_still_open)
            session.round_sources.append(_announce)

    def end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        span_id = ctx.span_id
        bridged = _bridged_events.pop(span_id, None) if _bridged_events else None
        with _announce_lock:
            entry = _open.pop(span_id, None)
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
        st.push(_Finished(span, level, overlapping, bridged=bridged))


def _local_ns(session: Session, epoch_ns: int) -> int:
    """An OpenTelemetry timestamp (ns since the epoch) on tracebridge's span clock."""
    return int(epoch_ns) - session.wall_offset_ns - session.clock_offset


_named: list[tuple[Any, Any]] = [(None, None)]  # the session and resource last looked at


def _name_process(session: Session, resource: Any) -> None:
    last = _named[0]
    if resource is None or (last[0] is session and last[1] is resource):
        return
    _named[0] = (session, resource)
    name = resource.attributes.get("service.name")
    if isinstance(name, str) and name and name != session.process_name:
        session.rename_process(name)


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
        self._recorder = _FileRecorder(target, trace_level)

    @property
    def session(self) -> Session:
        return self._recorder.target

    @property
    def dropped(self) -> int:
        """Spans that ended after the recording stopped (or while another one was active)."""
        return self._recorder.dropped

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
            session = self._recorder.target
            if session.stopped:
                return True
            return session.flush(max(0.0, timeout_millis / 1000))
        except Exception as exc:
            _safety.internal_error("PerfettoSpanProcessor.force_flush", exc, raise_in_strict=False)
            return False


class _FileRecorder(_Recorder):
    def __init__(self, target: str | os.PathLike[str] | Session, trace_level: int) -> None:
        super().__init__(trace_level)
        self.target = target if isinstance(target, Session) else record_into(target, trace_level)

    def session(self) -> Session | None:
        target = self.target
        return target if RT.session is target else None


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
        self._recorder = _FileRecorder(path, trace_level)
        self._stopped = False

    @property
    def session(self) -> Session:
        return self._recorder.target

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._stopped:
            return SpanExportResult.FAILURE
        try:
            recorder = self._recorder
            session = recorder.session()
            if session is None or session.stopped:
                recorder.dropped += len(spans)
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
            session = self._recorder.target
            return True if session.stopped else session.flush(max(0.0, timeout_millis / 1000))
        except Exception as exc:
            _safety.internal_error("PerfettoSpanExporter.force_flush", exc, raise_in_strict=False)
            return False


# ---------------------------------------------------------------------------------------------- samplers


class _Probe:
    """What a sampling stage sees of a span about to begin."""

    __slots__ = ("level", "metadata", "name", "trace_id")
    kind = "span"
    parent = None
    adjusted_count = 1.0

    def __init__(self, name: str, trace_id: int, level: int, metadata: dict[str, Any] | None) -> None:
        self.name = name
        self.trace_id = trace_id
        self.level = level
        self.metadata = metadata


#: Stages whose decisions are not a function of the trace's randomness: a span they keep must not
#: claim a threshold (OTEP 235 has them erase ``th``).
_INCONSISTENT = (Probability, RateLimiter, KeyedRateLimiter)


def parse_ot(state: TraceState | None) -> dict[str, str]:
    """The sub-keys of OpenTelemetry's ``ot`` tracestate entry (``th``, ``rv``, ...)."""
    if state is None:
        return {}
    value = state.get("ot")
    if not value:
        return {}
    out: dict[str, str] = {}
    for part in value.split(";"):
        key, sep, val = part.partition(":")
        if sep and key:
            out[key] = val
    return out


def _with_ot(state: TraceState | None, ot: dict[str, str]) -> TraceState:
    state = state if state is not None else TraceState()
    value = ";".join(f"{k}:{v}" for k, v in ot.items())
    if not value:
        return state.delete("ot") if "ot" in state else state
    return state.update("ot", value) if "ot" in state else state.add("ot", value)


def _randomness(trace_id: int, ot: dict[str, str]) -> int:
    """The trace id to decide on: its own, or with an explicit ``rv`` (56 random bits) in place of its
    low 56 bits."""
    rv = ot.get("rv", "")
    if len(rv) == 14:
        try:
            return (trace_id & ~RANDOMNESS_MASK) | int(rv, 16)
        except ValueError:
            pass
    return trace_id


class PipelineSampler(Sampler):
    """An OpenTelemetry ``Sampler`` that decides with tracebridge sampling stages (a stage, a list of
    them, or a :class:`~tracebridge.sampling.Pipeline`), for ``TracerProvider(sampler=...)``.

    Spans are seen as level ``level`` with their attributes as metadata. Consistent stages decide on
    the trace id's randomness (or the ``rv`` of the ``ot`` tracestate entry when there is one), and a
    kept span's tracestate gets ``ot=th:...`` (OTEP 235), so that other processes and backends can tell
    its sampling probability; a decision that involved a rate limit or a random draw erases ``th``.
    Stages that decide when spans end (``MinDuration``, ``TailSampler``) belong in
    ``tracebridge.start(sampling=...)``, not here. Never raises into the SDK (a failure keeps the span).

    .. versionadded:: 0.1
    """

    def __init__(self, sampling: Stage | Sequence[Stage] | Pipeline, *, level: int = 2) -> None:
        pipeline = Pipeline.of(sampling)
        if pipeline is None:
            raise ValueError("PipelineSampler: expected a stage, a list of stages or a Pipeline, got None")
        if pipeline.tail_stages:
            raise ValueError(
                f"PipelineSampler: {pipeline.tail_stages[0]!r} decides when spans end; an OpenTelemetry "
                "sampler decides when they begin (use it in tracebridge.start(sampling=...))"
            )
        if isinstance(level, bool) or not isinstance(level, int) or level < 1:
            raise ValueError(f"PipelineSampler(level) must be an integer >= 1, got {level!r}")
        self.pipeline = pipeline
        self.level = level
        self._consistent = not any(isinstance(st, _INCONSISTENT) for st in pipeline.head_stages)
        # When the stages decide by trace randomness alone (TraceIdRatio and the like, see
        # Pipeline.root_threshold), one comparison decides, and a kept span's ``th`` is always this one.
        threshold = pipeline.root_threshold
        self._th = threshold_to_th(threshold) if threshold is not None and threshold < 1 << 56 else None
        self._kept_state = _with_ot(None, {"th": self._th}) if self._th is not None else None

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[OTelLink] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if trace_state is None:
            trace_state = get_current_span(parent_context).get_span_context().trace_state
        try:
            pipe = self.pipeline
            threshold = pipe.root_threshold
            if threshold is not None:
                ot = parse_ot(trace_state) if trace_state else {}
                if ((_randomness(trace_id, ot) if ot else trace_id) & RANDOMNESS_MASK) < threshold:
                    next(pipe.root_drops)
                    return SamplingResult(Decision.DROP, None, trace_state)
                pipe.count_root_kept("span")
                if not trace_state and self._kept_state is not None:
                    return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, self._kept_state)
                ot.pop("th", None)
                if self._th is not None:
                    ot["th"] = self._th
                return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, _with_ot(trace_state, ot))
            ot = parse_ot(trace_state)
            probe = _Probe(
                name, _randomness(trace_id, ot), self.level, dict(attributes) if attributes else None
            )
            weight, dropped_by = self.pipeline.head(probe)
            if dropped_by is not None:
                self.pipeline.count_drop(dropped_by, "span")
                return SamplingResult(Decision.DROP, None, trace_state)
            ot.pop("th", None)
            if self._consistent:
                ot["th"] = threshold_to_th((1 << 56) - round(weight * (1 << 56)))
            # The SDK gives a span the attributes its sampler returns.
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, _with_ot(trace_state, ot))
        except Exception as exc:
            _safety.internal_error(f"{type(self).__name__}.should_sample", exc)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)

    def counts(self) -> dict[str, Any]:
        """What each stage kept and dropped."""
        return self.pipeline.counts()

    def get_description(self) -> str:
        return f"PipelineSampler({', '.join(repr(st) for st in self.pipeline.head_stages)})"


class ConsistentRatioSampler(PipelineSampler):
    """Keeps a share ``p`` of traces by OTEP 235 thresholds (:class:`tracebridge.sampling.TraceIdRatio`):
    the same decision as tracebridge's own spans and logs of that trace, in any process; a kept span's
    tracestate says ``ot=th:...``; an incoming ``rv`` is the randomness.

    .. versionadded:: 0.1
    """

    def __init__(self, p: float) -> None:
        with errors_named("ConsistentRatioSampler", "TraceIdRatio"):
            self.ratio = TraceIdRatio(p)
        super().__init__(self.ratio)

    def get_description(self) -> str:
        return f"ConsistentRatioSampler{{{self.ratio.p:g}, th:{self.ratio.th or 'none'}}}"


class AdaptiveSampler(PipelineSampler):
    """Per span name, a probability that adjusts itself so that about ``target_per_second`` spans of
    that name are kept a second (:class:`tracebridge.sampling.Adaptive`; its options too).

    .. versionadded:: 0.1
    """

    def __init__(self, target_per_second: float, **options: Any) -> None:
        with errors_named("AdaptiveSampler", "Adaptive"):
            self.adaptive = Adaptive(target_per_second, **options)
        super().__init__(self.adaptive)

    def get_description(self) -> str:
        return f"AdaptiveSampler{{{self.adaptive.target:g}/s}}"


class RateLimitingSampler(PipelineSampler):
    """At most ``per_second`` new spans a second (``burst`` at once): a token bucket
    (:class:`tracebridge.sampling.RateLimiter`). Not consistent: kept spans carry no ``th``.

    .. versionadded:: 0.1
    """

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        with errors_named("RateLimitingSampler", "RateLimiter"):
            self.limiter = RateLimiter(per_second, burst)
        super().__init__(self.limiter)

    def get_description(self) -> str:
        return f"RateLimitingSampler{{{self.limiter.per_second:g}/s}}"


class ParentBasedConsistentRatioSampler(ParentBased):
    """Roots by :class:`ConsistentRatioSampler`; children as their parent (and its tracestate).

    .. versionadded:: 0.1
    """

    def __init__(self, p: float) -> None:
        super().__init__(ConsistentRatioSampler(p))


class ParentBasedAdaptiveSampler(ParentBased):
    """Roots by :class:`AdaptiveSampler`; children as their parent.

    .. versionadded:: 0.1
    """

    def __init__(self, target_per_second: float, **options: Any) -> None:
        super().__init__(AdaptiveSampler(target_per_second, **options))


class ParentBasedRateLimitingSampler(ParentBased):
    """Roots by :class:`RateLimitingSampler`; children as their parent.

    .. versionadded:: 0.1
    """

    def __init__(self, per_second: float, burst: float | None = None) -> None:
        super().__init__(RateLimitingSampler(per_second, burst))


# ------------------------------------------------------------------------------------- two-way bridge

#: The instrumentation scope of the OpenTelemetry twins of tracebridge spans (the Perfetto processor
#: leaves them alone: tracebridge records the originals).
BRIDGE_SCOPE = "tracebridge"


def otel_attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as OpenTelemetry attributes, scrubbed as the trace has them (a secret-looking key's value
    never reaches an exporter): strings, booleans, numbers and homogeneous sequences of them as they are
    (the SDK applies its own limits), anything else as the text of its sanitized value, each attribute
    with a budget of its own."""
    out: dict[str, Any] = {}
    limits = RT.config.limits
    for key, value in metadata.items():
        key = key if type(key) is str else _safety.safe_str(key)
        if is_secret_key(key, limits):
            out[key] = SCRUBBED
        elif isinstance(value, (str, bool, int, float)):
            out[key] = value
        elif (
            isinstance(value, (list, tuple))
            and value
            and len({type(v) for v in value}) == 1
            and isinstance(value[0], (str, bool, int, float))
        ):
            out[key] = tuple(value)
        elif value is not None:
            # (The scrubs are counted once, when the writer sanitizes the same metadata for the trace.)
            clean = sanitize_metadata({key: value}, limits, Counts())
            out[key] = _safety.safe_str(next(iter(clean.values()), ""))
    return out


class _BridgedSpan(Span):
    """A recorded span with an OpenTelemetry twin (``configure(otel=...)``): the twin began with it, is
    the current OpenTelemetry span inside it, and ends with it, with its metadata and failure."""

    __slots__ = ("_otel", "_otel_bridge", "_otel_token")

    _otel: Any  # the OpenTelemetry span (None once ended)
    _otel_bridge: Any  # the bridge that began it (it ends it, even if the bridge is turned off)
    _otel_token: Any  # the OpenTelemetry context token while it is current

    def __enter__(self) -> Span:
        Span.__enter__(self)
        self._otel_bridge.attach(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        Span.__exit__(self, exc_type, exc, tb)
        _end_twin(self, exc)


class _BridgedDropped(DroppedSpan, _BridgedSpan):
    """A span sampling dropped, with its OpenTelemetry twin (whose own sampler decides about it)."""

    __slots__ = ()
    recorded_class = _BridgedSpan

    def __enter__(self) -> Span:
        DroppedSpan.__enter__(self)
        self._otel_bridge.attach(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        DroppedSpan.__exit__(self, exc_type, exc, tb)
        _end_twin(self, exc)


def _end_twin(s: Any, exc: Any) -> None:
    if s._otel is not None:
        s._otel_bridge.end(s, exc)


class Bridge:
    """tracebridge spans as OpenTelemetry spans (``tracebridge.configure(otel=True)``, or
    ``otel=provider``): each recorded span begins an OpenTelemetry twin in the current OpenTelemetry
    context (so it is the child of the OTel span around it, and takes its trace id), makes it current
    while it runs (so OTel spans inside are its children), and ends it with its metadata as attributes
    and its failure as an exception event and ERROR status. Instants become events of the current
    OpenTelemetry span.

    .. versionadded:: 0.1
    """

    #: The span API's spans while the bridge is on (see :class:`tracebridge._hooks.SpanHook`).
    span_class = _BridgedSpan
    dropped_class = _BridgedDropped

    def __init__(self, provider: Any = None) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace

        self._context = otel_context
        self._trace = otel_trace
        self.provider = provider
        source = provider if provider is not None else otel_trace
        self.tracer = source.get_tracer(BRIDGE_SCOPE)

    def begin(self, s: Any) -> None:
        """Begin ``s``'s twin (``s`` is being made: nothing else sees it yet)."""
        s._otel = None
        s._otel_token = None
        s._otel_bridge = self
        try:
            name = s.name
            if type(name) is not str:
                s.resolve_name()
                name = s.name
            attributes = otel_attributes(s.metadata) if s.metadata else None
            twin = self.tracer.start_span(name, attributes=attributes)
            ctx = twin.get_span_context()
            s._otel = twin
            if ctx.is_valid:
                s.trace_id, s.span_id = ctx.trace_id, ctx.span_id
                return
        except Exception as exc:
            _safety.internal_error("otel bridge: begin", exc)
        parent = s.parent
        s.trace_id = parent.trace_id if parent is not None else new_trace_id()
        s.span_id = 0

    def attach(self, s: Any) -> None:
        twin = s._otel
        if twin is not None:
            try:
                s._otel_token = self._context.attach(self._trace.set_span_in_context(twin))
            except Exception as exc:
                _safety.internal_error("otel bridge: attach", exc)

    def end(self, s: Any, exc: BaseException | None) -> None:
        twin, token = s._otel, s._otel_token
        s._otel = s._otel_token = None
        try:
            if s.metadata:
                twin.set_attributes(otel_attributes(s.metadata))
            error = s.error
            if error is not None:
                if isinstance(exc, BaseException):
                    twin.record_exception(exc)
                twin.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"))
            twin.end()
        except Exception as err:
            _safety.internal_error("otel bridge: end", err)
        if token is not None:
            try:
                self._context.detach(token)
            except Exception as err:
                _safety.internal_error("otel bridge: detach", err)

    def ended_call(self, name: str, start_ns: int, end_ns: int, exc: BaseException | None) -> None:
        """A call recorded after the fact (auto-instrumentation's ``min_duration`` path): its twin, with
        the call's times, in the current OpenTelemetry context."""
        session = RT.session
        if session is None:
            return
        offset = session.clock_offset + session.wall_offset_ns  # span clock -> ns since the epoch
        twin = self.tracer.start_span(name, start_time=start_ns + offset)
        if exc is not None:
            twin.record_exception(exc)
            twin.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        twin.end(end_time=end_ns + offset)

    def instant(self, rec: Record) -> None:
        current = self._trace.get_current_span()
        attributes = otel_attributes(rec.metadata) if rec.metadata else None
        if current.is_recording():
            current.add_event(rec.name, attributes)
            span_id = current.get_span_context().span_id
            if span_id in _open:  # a processor of ours records that span: tracebridge has the instant
                events = _plain(current, "_events", "_dq", "events")
                if events:
                    mine = _bridged_events.setdefault(span_id, [])
                    mine.append(events[-1])
                    if len(mine) > _MAX_BRIDGED_EVENTS:  # (the SDK keeps no more than that many)
                        del mine[0]
        else:
            self.tracer.start_span(rec.name, attributes=attributes).end()
