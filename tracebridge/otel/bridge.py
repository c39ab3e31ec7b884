"""The two-way bridge (``tracebridge.configure(otel=...)``): tracebridge spans as OpenTelemetry spans,
instants as events of the current OpenTelemetry span."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Status, StatusCode

from .. import _codec, _safety
from .._backtrace import error_info
from .._model import ErrorInfo, Record, new_trace_id
from .._recorder.runtime import RT
from .._sanitize import SCRUBBED, Counts, is_secret_key, sanitize_metadata, scrub_text
from ..spans import DroppedSpan, Span
from ._shared import BRIDGE_SCOPE, MAX_BRIDGED_EVENTS, bridged_events, open_spans, plain


def otel_attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as OpenTelemetry attributes, scrubbed as the trace has them (a secret-looking key's value
    never reaches an exporter): strings, booleans, numbers and homogeneous sequences of them as they are
    (the SDK applies its own limits), anything else as the text of its sanitized value, each attribute
    with a budget of its own."""
    out: dict[str, Any] = {}
    limits = RT.config.limits
    for key, value in metadata.items():
        key = scrub_text(key if type(key) is str else _safety.safe_str(key), limits)
        if is_secret_key(key, limits):
            out[key] = SCRUBBED
        elif isinstance(value, str):
            out[key] = scrub_text(value, limits)
        elif isinstance(value, (bool, int, float)):
            out[key] = value
        elif (
            isinstance(value, (list, tuple))
            and value
            and len({type(v) for v in value}) == 1
            and isinstance(value[0], (str, bool, int, float))
        ):
            out[key] = tuple(scrub_text(v, limits) if isinstance(v, str) else v for v in value)
        elif value is not None:
            # (The scrubs are counted once, when the writer sanitizes the same metadata for the trace.)
            clean = sanitize_metadata({key: value}, limits, Counts())
            out[key] = _safety.safe_str(next(iter(clean.values()), ""))
    return out


def otel_name(name: str, metadata: Mapping[str, Any] | None = None) -> tuple[str, dict[str, Any] | None]:
    """A span's name and attributes as an exporter gets them: TraceMe's ``name#k=v#`` split into the
    name and attributes, credentials in the name scrubbed, attributes as :func:`otel_attributes`."""
    merged: dict[str, Any] = dict(metadata) if metadata else {}
    if _codec.maybe_encoded(name):
        name, encoded = _codec.decode(name)
        merged = {**encoded, **merged}
    # (The scrubs are counted once, when the writer converts the same name for the trace.)
    return scrub_text(name, RT.config.limits), (otel_attributes(merged) if merged else None)


def _record_failure(twin: Any, error: ErrorInfo, exc: BaseException | None = None) -> None:
    """The failure as the SDK's ``record_exception`` records it (an ``exception`` event with the type's
    qualified name, Python's traceback, ``escaped``; ERROR status), with the messages scrubbed as the
    trace has them (``record_exception`` would export them as they are). ``exc``: the exception that
    left the span, when there is one (else the failure the span was marked with)."""
    limits = RT.config.limits
    message = scrub_text(error.message, limits)
    if exc is not None:
        kind = type(exc)
        module = kind.__module__
        name = f"{module}.{kind.__qualname__}" if module and module != "builtins" else kind.__qualname__
        try:
            stacktrace = "".join(traceback.format_exception(kind, exc, exc.__traceback__))
        except Exception:  # (an exception whose formatting raises)
            stacktrace = error.format()
    else:
        name, stacktrace = error.type, error.format()
    twin.add_event(
        "exception",
        {
            "exception.type": name,
            "exception.message": message,
            "exception.stacktrace": scrub_text(stacktrace, limits),
            "exception.escaped": str(exc is not None),
        },
    )
    twin.set_status(Status(StatusCode.ERROR, f"{error.type}: {message}"))


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
            name, attributes = otel_name(name, s.metadata)
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
                _record_failure(twin, error, exc if isinstance(exc, BaseException) else None)
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
        name, attributes = otel_name(name)
        twin = self.tracer.start_span(name, attributes=attributes, start_time=start_ns + offset)
        if exc is not None:
            _record_failure(twin, error_info(exc), exc)
        twin.end(end_time=end_ns + offset)

    def instant(self, rec: Record) -> None:
        current = self._trace.get_current_span()
        name, attributes = otel_name(_safety.safe_str(rec.name), rec.metadata)
        if current.is_recording():
            current.add_event(name, attributes)
            span_id = current.get_span_context().span_id
            if span_id in open_spans:  # a processor of ours records that span: tracebridge has the instant
                events = plain(current, "_events", "_dq", "events")
                if events:
                    mine = bridged_events.setdefault(span_id, [])
                    mine.append(events[-1])
                    if len(mine) > MAX_BRIDGED_EVENTS:  # (the SDK keeps no more than that many)
                        del mine[0]
        else:
            self.tracer.start_span(name, attributes=attributes).end()
