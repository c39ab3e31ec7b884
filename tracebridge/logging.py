"""stdlib ``logging`` integration, as ordinary classes for ``logging.config.dictConfig``.

* :class:`PerfettoHandler` records log records into a Perfetto trace, on their thread's track, attached
  to the current span.
* :class:`TraceContextFilter` adds ``trace_id``, ``span_id``, ``span_name`` and ``sampled`` to records.
* :class:`SamplingFilter` keeps a record iff its trace is kept; :class:`RateLimitFilter` suppresses floods.
* :class:`TraceFormatter` renders records and trace lines; :class:`TraceLines` turns trace lines on from a
  dictConfig.

Nothing here patches the root logger, ``dictConfig`` or the record factory. Records that tracebridge
itself emits (trace lines, internal reports) never come back into its pipeline.
"""

from __future__ import annotations

import atexit
import contextvars
import logging
import os
import random
import sys
import threading
from collections.abc import Callable
from typing import Any
from weakref import WeakSet

from . import _safety
from ._accel import speedups
from ._backtrace import error_info
from ._hooks import before_stop
from ._intake import admit, snapshot_metadata
from ._model import MESSAGE_TEMPLATE_KEY, ErrorInfo, Frame, Record
from ._recorder import Session
from ._recorder.runtime import RT, now_ns, thread_state
from ._recorder.targets import Target
from ._safety import errors_named
from ._sanitize import names_a_secret, needs_snapshot, safe_repr, scrub_text
from .sampling.limiters import KeyedRateLimiter, RateLimiter
from .sinks.lines import trace_line
from .spans import current_span

__all__ = [
    "PerfettoHandler",
    "RateLimitFilter",
    "SamplingFilter",
    "TraceContextFilter",
    "TraceFormatter",
    "TraceLines",
    "log_priority",
    "record_from_log",
    "trace_context",
]

#: Perfetto LogMessage priorities by logging level (VERBOSE 2, DEBUG 3, INFO 4, WARN 5, ERROR 6, FATAL 7).
_PRIORITIES = (
    (logging.CRITICAL, 7),
    (logging.ERROR, 6),
    (logging.WARNING, 5),
    (logging.INFO, 4),
    (logging.DEBUG, 3),
)
#: Attributes every LogRecord has; anything else on a record came from ``extra=`` and is metadata.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_TRACE_FIELDS = ("trace_id", "span_id", "span_name", "sampled")
_emitting: contextvars.ContextVar[bool] = contextvars.ContextVar("tracebridge_log_emit", default=False)


def log_priority(levelno: int) -> int:
    """The Perfetto LogMessage priority of a logging level."""
    for threshold, prio in _PRIORITIES:
        if levelno >= threshold:
            return prio
    return 2


def _trace_level(levelno: int) -> int:
    # WARNING and above are critical (kept whatever sampling says), INFO is info, DEBUG verbose.
    if levelno >= logging.WARNING:
        return 1
    if levelno >= logging.INFO:
        return 2
    return 3 if levelno >= logging.DEBUG else 4


# ----------------------------------------------------------------------------------------- trace context


def _otel_context() -> tuple[int, int, str, bool] | None:
    # Only if the application uses OpenTelemetry (then it is imported): importing it here could take
    # logging's module lock inside a handler's lock, the wrong way round (dictConfig takes them the
    # other way).
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:
        return None
    span = otel_trace.get_current_span()
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    name = getattr(span, "name", "") or ""
    return ctx.trace_id, ctx.span_id, str(name), bool(ctx.trace_flags.sampled)


def trace_context() -> tuple[int, int, str, bool] | None:
    """(trace id, span id, span name, sampled) of the current tracebridge span, else of the current
    OpenTelemetry span, else ``None``."""
    span = current_span()
    if span is not None:
        name = span.name if type(span.name) is str else ""
        return span.trace_id, span.span_id, name, bool(span.sampled)
    return _otel_context()


_NO_CONTEXT = ("", "", "", "")
#: The fields last computed, with the span they were computed for: logs come in runs from one span.
_last_fields: tuple[Any, tuple[str, str, str, str]] = (None, _NO_CONTEXT)


def add_context_fields(record: logging.LogRecord) -> None:
    """Set ``trace_id``, ``span_id``, ``span_name`` and ``sampled`` on ``record`` (unless it has them):
    the current span's, as hex strings, or empty strings outside a span. An ERROR record with an
    exception marks the current span failed. Never raises."""
    global _last_fields
    fields = record.__dict__
    if "trace_id" in fields:
        return
    try:
        if record.exc_info:
            fail_current_span(record)
        span: Any = current_span()
        if span is None and "opentelemetry.trace" in sys.modules:
            span = sys.modules["opentelemetry.trace"].get_current_span()
        last = _last_fields
        if span is None:
            values = _NO_CONTEXT
        elif last[0] is span:
            values = last[1]
        else:
            ctx = trace_context()
            if ctx is None:
                values = _NO_CONTEXT
            else:
                trace_id, span_id, name, sampled = ctx
                name = scrub_text(name, RT.config.limits) if type(name) is str else name  # (once a span)
                values = (f"{trace_id:032x}", f"{span_id:016x}", name, "1" if sampled else "0")
            _last_fields = (span, values)
    except Exception as exc:
        _safety.internal_error("TraceContextFilter", exc)
        values = _NO_CONTEXT
    fields["trace_id"], fields["span_id"], fields["span_name"], fields["sampled"] = values


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` (32 hex digits), ``span_id`` (16), ``span_name`` and ``sampled`` to every record,
    from tracebridge spans and OpenTelemetry spans alike; empty strings outside a span, so that a format
    string using them never fails. Never drops a record. (:class:`TraceFormatter` adds the same fields
    when it formats a record that lacks them: the filter is for other formatters, and for handlers that
    format on another thread, like ``QueueHandler``.)

    .. versionadded:: 0.1
    """

    def filter(self, record: logging.LogRecord) -> bool:
        add_context_fields(record)
        return True


# ------------------------------------------------------------------------------------ records -> events


def record_from_log(record: logging.LogRecord) -> Record:
    """The tracebridge event for a log record: the message as the body, the level as priority, the
    source location, ``logger`` and ``extra=`` fields as metadata, the failure from ``exc_info``, and the
    ids of the current span. Never raises: a message that cannot be formatted arrives as its parts,
    marked ``format_error``."""
    if _fast_record is not None:  # the plain record, compiled (None: anything out of the ordinary)
        rec: Record | None = _fast_record(record, _frames, _levels, trace_context, now_ns, _PLAIN_FIELDS)
        if rec is not None:
            return rec
    fields = record.__dict__
    metadata: dict[str, Any] = {"logger": record.name}
    try:
        body = record.getMessage()
    except Exception as exc:
        body = unformattable(record, exc)
        metadata["format_error"] = f"{type(exc).__name__}: {_safety.safe_str(exc)}"
    if record.args and isinstance(record.msg, str):
        metadata[MESSAGE_TEMPLATE_KEY] = record.msg
    # Fields beyond a plain record's come from ``extra=`` (or from filters); most records have none.
    known = _PLAIN_FIELDS + ("message" in fields) + ("asctime" in fields) + 4 * ("trace_id" in fields)
    if len(fields) != known:
        for key, value in fields.items():
            if key not in _STANDARD and key not in _TRACE_FIELDS and not key.startswith("_"):
                metadata[key] = value
    error: ErrorInfo | None = None
    if record.exc_info and record.exc_info[1] is not None:
        error = error_info(record.exc_info[1], record.exc_info[2])
    where = (record.funcName, record.pathname, record.lineno)
    try:
        source = _frames.get(where)
    except TypeError:  # not hashable: someone put odd things in the record
        source = _frame(where, cache=False)
    if source is None:
        source = _frame(where)
    ctx = trace_context()
    if ctx is not None:
        trace_id, span_id = ctx[0], ctx[1]
    else:  # logged outside a span on behalf of one (a flood's summary), or ids from elsewhere
        trace_id, span_id = _ids_of(record)
    t = now_ns()
    levels = _levels.get(record.levelno)
    if levels is None:
        levels = _levels_of(record.levelno)
    return Record(
        "log",
        body,
        t,
        t,
        levels[0],
        metadata,
        value=levels[1],
        source=source,
        error=error,
        trace_id=trace_id,
        span_id=span_id,
    )


#: Source locations already seen (a program logs from a bounded set of places; cleared if it does not).
_frames: dict[tuple[Any, Any, Any], Frame] = {}
#: (trace level, Perfetto priority) by logging level.
_levels: dict[int, tuple[int, int]] = {}
_PLAIN_FIELDS = len(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)
_fast_record = None if speedups is None else speedups.log_record
_push = None if speedups is None else speedups.push  # (thread_state().push, compiled)


def _frame(where: tuple[Any, Any, Any], cache: bool = True) -> Frame:
    func, path, line = where
    try:
        number = line if type(line) is int else int(line or 0)
    except (TypeError, ValueError):
        number = 0
    frame = Frame(_safety.safe_str(func or ""), _safety.safe_str(path or ""), number)
    if not cache:
        return frame
    if len(_frames) >= 4096:
        _frames.clear()
    _frames[where] = frame
    return frame


def _levels_of(levelno: int) -> tuple[int, int]:
    levels = (_trace_level(levelno), log_priority(levelno))
    if type(levelno) is int and len(_levels) < 256:
        _levels[levelno] = levels
    return levels


def fail_current_span(record: logging.LogRecord) -> None:
    """A record at ERROR or above with an exception, logged inside a span, marks that span failed
    (``Span.fail``): the failure is the span's too, with its back-trace, though the code handled it."""
    if record.levelno >= logging.ERROR and record.exc_info and record.exc_info[1] is not None:
        span = current_span()
        if span is not None and span.error is None:
            span.fail(record.exc_info[1], record.exc_info[2])


def _ids_of(record: logging.LogRecord) -> tuple[int, int]:
    fields = record.__dict__
    try:
        trace_id, span_id = fields.get("trace_id"), fields.get("span_id")
        if (
            isinstance(trace_id, str)
            and len(trace_id) == 32
            and isinstance(span_id, str)
            and len(span_id) == 16
        ):
            return int(trace_id, 16), int(span_id, 16)
    except ValueError:
        pass
    return 0, 0


# ---------------------------------------------------------------------------------------------- handler


class PerfettoHandler(logging.Handler):
    """Records log records into the Perfetto trace ``filename``: each becomes a LogMessage on its
    thread's track (priority from its level, interned source location and body), attached to the current
    span; a record with ``exc_info`` carries the back-trace as the event's callstack.

    If tracebridge is not recording yet, the handler starts recording into ``filename`` (spans of
    ``trace_level`` and below too); a session started later with the same file joins it, and so do other
    handlers for that file: one file, one trace. The recording lasts until ``tracebridge.stop()`` or the
    end of the process (closing the handler does not end it: dictConfig may be applied again). Records
    pass the session's sampling; records made while tracebridge is recording another file, or after the
    recording stopped, are counted in ``dropped``.

    ``filename`` may also be a :class:`~tracebridge.Session` (an in-memory one, say): the records go
    into that recording while it is the active one.

    ``emit`` does no I/O: it queues the record for tracebridge's writer thread.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        filename: str | os.PathLike[str] | Session,
        level: int | str = logging.NOTSET,
        *,
        trace_level: int = 2,
    ) -> None:
        super().__init__(level)
        self.target = Target(filename, trace_level, "log", "PerfettoHandler", quiet_io=True)
        self.filename = self.target.name

    @property
    def session(self) -> Session | None:
        """The session this handler records into now (``None`` while nothing records its file)."""
        return self.target.current

    @property
    def dropped(self) -> int:
        """Records given to the handler while nothing recorded its file (or another file was recorded)."""
        return self.target.dropped

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter and emit as :meth:`logging.Handler.handle` does, without taking the handler's lock:
        ``emit`` only queues the record (thread-safe), and with ``on_full="block"`` it may wait for the
        writer thread, which must never find the lock taken by a thread that waits for it (the writer
        logs trace lines, which may reach this handler)."""
        rv = self.filter(record) if self.filters else True  # (no filters: what filter() returns)
        if isinstance(rv, logging.LogRecord):  # (Python 3.12+: a filter may return a changed record)
            record = rv
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        if _safety.inside.get() or _emitting.get():
            return  # tracebridge's own records, or a record logged while this handler emits one
        token = _emitting.set(True)
        try:
            target = self.target
            current = RT.session
            if (current is None or current is not target.current) and target.session() is None:
                return  # (the common case, the file's recording, costs no call)
            if record.exc_info:
                fail_current_span(record)
            rec = record_from_log(record)
            pipe = RT.pipeline
            if pipe is not None and not admit(pipe, rec):
                return
            if rec.metadata and needs_snapshot(rec.metadata):
                rec.metadata = snapshot_metadata(rec.metadata)
            if _push is not None:
                _push(rec)
            else:
                thread_state().push(rec)
        except Exception as exc:
            self.target.dropped += 1
            _safety.internal_error("PerfettoHandler.emit", exc)
        finally:
            _emitting.reset(token)

    def flush(self) -> None:
        """Ask the writer to write what is queued, without waiting: logging calls this with the handler's
        lock held (at shutdown, and when dictConfig is applied again), and other threads wait on that
        lock. The trace is complete when the recording stops (at the latest, at exit)."""
        try:
            target = getattr(self, "target", None)  # (None: its __init__ failed; logging still has it)
            if target is not None:
                target.nudge()
        except Exception as exc:
            _safety.internal_error("PerfettoHandler.flush", exc, raise_in_strict=False)

    def __repr__(self) -> str:
        return f"<PerfettoHandler {self.filename} ({logging.getLevelName(self.level)})>"


# ---------------------------------------------------------------------------------------------- filters


class LogSampling:
    """The decision :class:`SamplingFilter` and structlog's ``SamplingProcessor`` make for a log event
    below their ``keep_level``: inside a trace, the trace's decision (tracebridge's sampling, or the
    OpenTelemetry span's sampled flag); outside, a ``probability`` and/or at most ``per_second`` a
    second."""

    def __init__(self, probability: float, per_second: float | None, what: str) -> None:
        if (
            isinstance(probability, bool)
            or not isinstance(probability, (int, float))
            or not 0 <= probability <= 1
        ):
            raise ValueError(f"{what}(probability) must be between 0 and 1, got {probability!r}")
        self.probability = float(probability)
        self._limiter = None if per_second is None else RateLimiter(per_second)
        self._random = random.Random()

    def keep(self) -> bool:
        ctx = trace_context()
        if ctx is not None:
            return ctx[3]
        if self.probability < 1 and self._random.random() >= self.probability:
            return False
        return self._limiter is None or self._limiter.allow()


class SamplingFilter(logging.Filter):
    """Keeps a record iff its trace is kept: the same decision as its spans (tracebridge's sampling, or
    the OpenTelemetry span's sampled flag). Records outside any trace are kept with ``probability``
    and/or at most ``per_second`` a second. Records at ``keep_level`` (default WARNING) and above are
    always kept. Dropped records are counted (``dropped``, and the active session's stats).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        probability: float = 1.0,
        per_second: float | None = None,
        keep_level: int | str = logging.WARNING,
        name: str = "",
    ) -> None:
        super().__init__(name)
        self._sampling = LogSampling(probability, per_second, "SamplingFilter")
        self.probability = self._sampling.probability
        self.keep_level = level_number(keep_level, "SamplingFilter(keep_level)")
        self.kept = 0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.keep_level:
            return True
        try:
            keep = self._sampling.keep()
        except Exception as exc:
            _safety.internal_error("SamplingFilter", exc)
            keep = True
        if keep:
            self.kept += 1
        else:
            self.dropped += 1
            count_log_drop("sampled_out")
        return keep


def count_log_drop(reason: str) -> None:
    """Count a log event dropped by a filter or processor in the active session's stats."""
    session = RT.session
    if session is not None:
        session.count_drop(reason, "log")


def level_number(level: int | str, what: str) -> int:
    """A logging level from its number or name (any case); ``ValueError`` naming ``what`` else."""
    if isinstance(level, str):
        value = logging.getLevelName(level.upper())
        if isinstance(value, int):
            return value
    elif isinstance(level, int) and not isinstance(level, bool):
        return level
    raise ValueError(f"{what}: expected a logging level, got {level!r}")


def _template_key(record: logging.LogRecord) -> Any:
    return record.name, record.msg if isinstance(record.msg, str) else id(record.msg)


def _logger_key(record: logging.LogRecord) -> Any:
    return record.name


def keyed_limiter(
    owner: str,
    per_second: float,
    burst: float | None,
    key: Any,
    named: dict[str, Callable[[Any], Any]],
    max_keys: int,
) -> tuple[Callable[[Any], Any], KeyedRateLimiter]:
    """The key function and the limiter behind a rate-limiting filter or processor: ``key`` is one of
    ``named`` or a callable; setup errors name ``owner``, the class the user wrote."""
    if callable(key):
        key_fn = key
    elif isinstance(key, str) and key in named:
        key_fn = named[key]
    else:
        choices = ", ".join(repr(k) for k in named)
        raise ValueError(f"{owner}(key) must be {choices} or a callable, got {key!r}")
    with errors_named(owner, "KeyedRateLimiter"):
        return key_fn, KeyedRateLimiter(per_second, key=key_fn, burst=burst, max_keys=max_keys)


class RateLimitFilter(logging.Filter):
    """Lets through at most ``per_second`` records a second per key (``burst`` at once): ``key="msg"``
    (the message template, default), ``"logger"``, or a callable of the record. When a key's flood ends
    (its next record passes, its key is evicted, :meth:`flush` is called, or the process exits) one
    record ``suppressed N similar records (template)`` is logged on the logger and at the level of the
    last suppressed record. At most ``max_keys`` keys are tracked.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        per_second: float,
        burst: float | None = None,
        key: str | Callable[[logging.LogRecord], Any] = "msg",
        max_keys: int = 1000,
        name: str = "",
    ) -> None:
        super().__init__(name)
        self._key_fn, self._limiter = keyed_limiter(
            "RateLimitFilter", per_second, burst, key, {"msg": _template_key, "logger": _logger_key}, max_keys
        )
        self._limiter.on_flood_end = self._flood_end
        self._last: dict[Any, logging.LogRecord] = {}  # the last suppressed record of each flood
        self._last_lock = threading.Lock()
        self._last_decision = threading.local()
        self.dropped = 0
        _rate_limit_filters.add(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_tracebridge_suppressed", False):
            return True  # our own summary
        last = self._last_decision
        if getattr(last, "record", None) is record:
            return bool(last.keep)  # the same record at the next handler sharing this filter
        keep = bool(self._limiter.decide(record))
        last.record, last.keep = record, keep
        if not keep:
            self.dropped += 1
            count_log_drop("rate_limited")
            try:
                key = self._key_fn(record)
                with self._last_lock:
                    self._last[key] = record
            except Exception as exc:
                _safety.internal_error("RateLimitFilter key", exc, raise_in_strict=False)
        return keep

    def flush(self) -> None:
        """Log the summary of every flood still going on (called for every filter before a recording
        stops, and at exit)."""
        self._limiter.flush()

    def _flood_end(self, key: Any, count: int) -> None:
        with self._last_lock:
            record = self._last.pop(key, None)
        if record is None:
            return
        template = key[1] if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], str) else key
        logger = logging.getLogger(record.name)
        extra: dict[str, Any] = {"_tracebridge_suppressed": True, "suppressed": count}
        for field in _TRACE_FIELDS:  # the summary belongs where the flood was (if a filter said where)
            if field in record.__dict__:
                extra[field] = record.__dict__[field]
        summary = logger.makeRecord(
            record.name, record.levelno, record.pathname, record.lineno,
            "suppressed %d similar records (%s)", (count, _safety.safe_str(template)), None, record.funcName,
            extra,
        )  # fmt: skip
        # Only where this filter suppressed: its logger's handlers, or the handlers it is attached to.
        if self in logger.filters:
            logger.handle(summary)
            return
        node: logging.Logger | None = logger
        while node is not None:
            for handler in node.handlers:
                if self in handler.filters and summary.levelno >= handler.level:
                    handler.handle(summary)
            node = node.parent if node.propagate else None

    @property
    def suppressed(self) -> int:
        return sum(c.value for c in self._limiter.dropped_by_kind.values())


_rate_limit_filters: WeakSet[RateLimitFilter] = WeakSet()


def _report_floods() -> None:
    for flt in list(_rate_limit_filters):
        try:
            flt.flush()
        except Exception as exc:
            _safety.internal_error("RateLimitFilter.flush", exc, raise_in_strict=False)


# Before a recording stops (its trace gets the summaries), and at exit: registered after logging's own
# exit hook (logging is imported first), so this runs before handlers are flushed and closed.
before_stop.append(_report_floods)
atexit.register(_report_floods)


# -------------------------------------------------------------------------------------------- formatter


class TraceFormatter(logging.Formatter):
    """A formatter that renders trace lines (records of the ``tracebridge.trace`` logger) as
    ``[TRACE] name (1250us) {k=v}``, with ``include_metadata``, ``include_timing`` and ``include_thread``
    choosing the parts, and their back-traces outermost frame first. Other records are formatted as
    ``logging.Formatter`` formats them, Python's traceback included (``compact_tracebacks=True``: the
    compact back-trace instead), with credentials in their text scrubbed; a record whose message does not
    format (``msg % args`` raises) is not lost to logging's ``--- Logging error ---``: it is written as
    its template, the arguments' reprs and the error. A record without ``trace_id``,
    ``span_id``, ``span_name`` and ``sampled`` gets them as :class:`TraceContextFilter` would (the
    current span's, empty strings outside a span), so a format string may use them with or without
    the filter.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: str = "%",
        validate: bool = True,
        *,
        include_metadata: bool = True,
        include_timing: bool = True,
        include_thread: bool = False,
        compact_tracebacks: bool = False,
        defaults: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(fmt, datefmt, style, validate, defaults=defaults)  # type: ignore[arg-type]
        self.include_metadata = include_metadata
        self.include_timing = include_timing
        self.include_thread = include_thread
        self.compact_tracebacks = compact_tracebacks

    def format(self, record: logging.LogRecord) -> str:
        # Changes go to a copy: the other handlers get the record as it came (logging.Formatter keeps
        # the traceback's text on the record, for every handler: the compact one must not be it).
        try:
            return self._format(record)
        except Exception:
            try:  # (the message is formatted once when it formats: asked again only here)
                record.getMessage()
            except Exception as exc:  # it does not: written as its parts
                record = logging.makeLogRecord(record.__dict__)
                record.msg, record.args = unformattable(record, exc), None
                return self._format(record)
            raise

    def _format(self, record: logging.LogRecord) -> str:
        if self.compact_tracebacks and record.exc_info:
            record = logging.makeLogRecord(record.__dict__)
            record.exc_text = None
        # The whole text scrubbed, whatever put it there: the message, a traceback another formatter
        # cached on the record, stack_info, %(span_name)s. (Counted where the record is recorded.)
        return scrub_text(super().format(record), RT.config.limits)

    def formatMessage(self, record: logging.LogRecord) -> str:
        add_context_fields(record)
        ev = getattr(record, "trace_event", None)
        if ev is not None:
            record.message = trace_line(
                ev,
                getattr(record, "trace_tag", "[TRACE]"),
                getattr(record, "trace_note", ""),
                include_metadata=self.include_metadata,
                include_timing=self.include_timing,
                include_thread=self.include_thread,
            )
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        exc = ei[1] if ei else None
        if exc is None or not self.compact_tracebacks:
            return super().formatException(ei)
        return error_info(exc, ei[2]).format()


def unformattable(record: logging.LogRecord, exc: BaseException) -> str:
    """What a record whose message does not format says instead: its template, its arguments' reprs
    and the error (``'%d items' % ('x',) [format error: TypeError: ...]``)."""
    limits = RT.config.limits
    template = record.msg if isinstance(record.msg, str) else _safety.safe_str(record.msg)
    if limits.secret_keys is not None and names_a_secret(template, limits):
        count = len(record.args) if isinstance(record.args, (tuple, dict)) else 1
        args = f"({count} arguments, not shown: the message gives one to a secret)"
    else:
        args = safe_repr(record.args, limits.max_string)
    return f"{template!r} % {args} [format error: {type(exc).__name__}: {_safety.safe_str(exc)}]"


class TraceLines(logging.Filter):
    """Turns trace lines on from a dictConfig (a filter that lets every record through)::

        "filters": {"trace_lines": {"()": "tracebridge.logging.TraceLines", "slow": {"db.*": "5ms"}}}

    Takes the options of ``tracebridge.configure(log_lines=...)``.

    .. versionadded:: 0.1
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        from ._recorder import configure

        configure(log_lines=options or True)

    def filter(self, record: logging.LogRecord) -> bool:
        return True
