"""structlog processors: trace context, sampling, rate limiting, Perfetto, and trace-line rendering.

They fit anywhere in a processor chain, including ``structlog.stdlib.ProcessorFormatter``'s::

    structlog.configure(processors=[
        tracebridge.structlog.add_trace_context,
        tracebridge.structlog.SamplingProcessor(),
        tracebridge.structlog.PerfettoProcessor("app.perfetto-trace"),
        tracebridge.structlog.TraceLineRenderer(),
    ])

Dropping an event is ``raise structlog.DropEvent``, as structlog does it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from . import _safety
from ._backtrace import error_info
from ._intake import admit, snapshot_metadata
from ._model import MESSAGE_TEMPLATE_KEY, ErrorInfo, Frame, Record
from ._recorder import Session
from ._recorder.runtime import RT, now_ns, thread_state
from ._recorder.targets import Target
from ._sanitize import Counts, names_a_secret, needs_snapshot, sanitize_metadata, scrub_text
from .logging import LogSampling, count_log_drop, keyed_limiter, level_number, log_priority, trace_context
from .sinks.lines import format_metadata, trace_line
from .spans import current_span

__all__ = [
    "PerfettoProcessor",
    "RateLimitProcessor",
    "SamplingProcessor",
    "TraceLineRenderer",
    "add_trace_context",
]

EventDict = MutableMapping[str, Any]


def _levelno(method_name: str, event_dict: EventDict) -> int:
    name = str(event_dict.get("level") or method_name or "info").upper()
    if name == "EXCEPTION":
        return logging.ERROR
    value = logging.getLevelName("WARNING" if name == "WARN" else name)
    return value if isinstance(value, int) else logging.INFO


def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Adds ``trace_id`` (32 hex digits) and ``span_id`` (16) of the current tracebridge or OpenTelemetry
    span; nothing outside a span.

    .. versionadded:: 0.1
    """
    ctx = trace_context()
    if ctx is not None:
        event_dict.setdefault("trace_id", f"{ctx[0]:032x}")
        event_dict.setdefault("span_id", f"{ctx[1]:016x}")
        if event_dict.get("exc_info"):
            _fail_current_span(method_name, event_dict)
    return event_dict


def _fail_current_span(method_name: str, event_dict: EventDict) -> tuple[BaseException, Any] | None:
    # An error event with an exception inside a span marks the span failed (as the logging bridge does).
    exc = _exc_info(event_dict.get("exc_info"))
    if exc is not None and _levelno(method_name, event_dict) >= logging.ERROR:
        span = current_span()
        if span is not None and span.error is None:
            span.fail(exc[0], exc[1])
    return exc


class SamplingProcessor:
    """Drops an event (``structlog.DropEvent``) whose trace is dropped: the same decision as its spans.
    Events outside any trace are kept with ``probability`` and/or at most ``per_second`` a second;
    events at ``keep_level`` (default warning) and above are always kept.

    .. versionadded:: 0.1
    """

    def __init__(
        self, probability: float = 1.0, per_second: float | None = None, keep_level: str | int = "warning"
    ) -> None:
        self._sampling = LogSampling(probability, per_second, "SamplingProcessor")
        self.probability = self._sampling.probability
        self.keep_level = level_number(keep_level, "SamplingProcessor(keep_level)")
        self.dropped = 0

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if _levelno(method_name, event_dict) >= self.keep_level:
            return event_dict
        if not self._sampling.keep():
            self.dropped += 1
            count_log_drop("sampled_out")
            raise structlog.DropEvent
        return event_dict


class RateLimitProcessor:
    """At most ``per_second`` events a second per key (``burst`` at once): ``key="event"`` (the event
    name, default), ``"logger"``, or a callable of the event dict. The first event of a key that passes
    after a flood carries ``suppressed=N``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        per_second: float,
        burst: float | None = None,
        key: str | Callable[[EventDict], Any] = "event",
        max_keys: int = 1000,
    ) -> None:
        _, self._limiter = keyed_limiter(
            "RateLimitProcessor",
            per_second,
            burst,
            key,
            {"event": _event_key, "logger": _logger_key},
            max_keys,
        )
        self._limiter.on_flood_end = self._flood_end
        self._ended: dict[Any, int] = {}
        self.dropped = 0

    def _flood_end(self, key: Any, count: int) -> None:
        self._ended[key] = self._ended.get(key, 0) + count

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if not self._limiter.decide(event_dict):
            self.dropped += 1
            count_log_drop("rate_limited")
            raise structlog.DropEvent
        if self._ended:
            try:
                suppressed = self._ended.pop(self._limiter._key(event_dict), 0)
            except Exception:
                suppressed = 0
            if suppressed:
                event_dict["suppressed"] = suppressed
        return event_dict


def _event_key(event_dict: EventDict) -> Any:
    return _safety.safe_str(event_dict.get("event", ""))


def _logger_key(event_dict: EventDict) -> Any:
    return _safety.safe_str(event_dict.get("logger", event_dict.get("logger_name", "")))


def _exc_info(value: Any) -> tuple[BaseException, Any] | None:
    if value is None or value is False:
        return None
    if value is True:
        _, exc, tb = sys.exc_info()
        return (exc, tb) if exc is not None else None
    if isinstance(value, BaseException):
        return value, value.__traceback__
    if isinstance(value, tuple) and len(value) == 3 and value[1] is not None:
        return value[1], value[2]
    return None


class PerfettoProcessor:
    """Records each event as a Perfetto log message and passes it on unchanged: the event as the body,
    the level as priority, the other keys as metadata, ``exc_info`` as the back-trace. ``target`` is a
    trace file (joining or starting the recording of that file, as
    :class:`tracebridge.logging.PerfettoHandler` does) or a :class:`~tracebridge.Session`.

    .. versionadded:: 0.1
    """

    def __init__(self, target: str | os.PathLike[str] | Session, *, trace_level: int = 2) -> None:
        self.target = Target(target, trace_level, "log", "structlog's PerfettoProcessor")

    @property
    def session(self) -> Session | None:
        """The session this processor records into now (``None`` while nothing records its file)."""
        return self.target.current

    @property
    def dropped(self) -> int:
        """Events given to the processor while nothing recorded its file (or another file was recorded)."""
        return self.target.dropped

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        if _safety.inside.get():
            return event_dict
        try:
            if self.target.session() is None:
                return event_dict
            rec = self._record(logger, method_name, event_dict)
            pipe = RT.pipeline
            if pipe is None or admit(pipe, rec):
                if rec.metadata and needs_snapshot(rec.metadata):
                    rec.metadata = snapshot_metadata(rec.metadata)
                thread_state().push(rec)
        except Exception as exc:
            self.target.dropped += 1
            _safety.internal_error("PerfettoProcessor", exc)
        return event_dict

    def _record(self, logger: Any, method_name: str, event_dict: EventDict) -> Record:
        levelno = _levelno(method_name, event_dict)
        event = event_dict.get("event", "")
        body = _safety.safe_str(event)
        skip = {
            "event",
            "level",
            "exc_info",
            "timestamp",
            "_record",
            "_from_structlog",
            "trace_id",
            "span_id",
        }
        formatted, format_error = _positional(event, event_dict.get("positional_args"))
        if formatted is not None:  # ``log.info("order %d", n)`` before PositionalArgumentsFormatter ran
            body = formatted
            skip.add("positional_args")
        metadata: dict[str, Any] = {k: v for k, v in event_dict.items() if k not in skip}
        if formatted is not None:
            metadata.setdefault(MESSAGE_TEMPLATE_KEY, event)
        elif format_error is not None:  # the template as the body, its arguments beside it, marked
            metadata["format_error"] = format_error
            limits = RT.config.limits
            if limits.secret_keys is not None and isinstance(event, str) and names_a_secret(event, limits):
                count = len(event_dict.get("positional_args") or ())
                metadata["positional_args"] = (
                    f"({count} arguments, not shown: the message gives one to a secret)"
                )
        name = getattr(logger, "name", None)
        if isinstance(name, str) and "logger" not in metadata:
            metadata["logger"] = name
        error: ErrorInfo | None = None
        exc = _fail_current_span(method_name, event_dict) if event_dict.get("exc_info") else None
        if exc is not None:
            error = error_info(exc[0], exc[1])
        source = _caller()
        ctx = trace_context()
        trace_id, span_id = (ctx[0], ctx[1]) if ctx is not None else (0, 0)
        t = now_ns()
        level = 1 if levelno >= logging.WARNING else 2 if levelno >= logging.INFO else 3
        prio = log_priority(levelno)
        return Record(
            "log",
            body,
            t,
            t,
            level,
            metadata or None,
            value=prio,
            source=source,
            error=error,
            trace_id=trace_id,
            span_id=span_id,
        )


def _positional(event: Any, args: Any) -> tuple[str | None, str | None]:
    """The message ``event`` formats to with ``positional_args``, as structlog's
    PositionalArgumentsFormatter formats it (a lone non-empty dict: named arguments), and why it does
    not format; ``(None, None)`` when there are none (the event is then the body, the arguments
    metadata)."""
    if not args or not isinstance(event, str) or not isinstance(args, tuple):
        return None, None
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        args = args[0]
    try:
        return str(event % args), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {_safety.safe_str(exc)}"


def _caller() -> Frame | None:
    """Where the application logged: the first frame outside structlog, logging and tracebridge."""
    f: Any = sys._getframe(2)
    while f is not None:
        module = f.f_globals.get("__name__", "")
        if not module.startswith(("structlog", "tracebridge", "logging")):
            return Frame(f.f_code.co_name, f.f_code.co_filename, f.f_lineno)
        f = f.f_back
    return None


class TraceLineRenderer:
    """Renders an event as a line: ``[INFO] user logged in {user=ann}``; a trace line coming through
    ``ProcessorFormatter`` (a record of the ``tracebridge.trace`` logger) as
    ``[TRACE] load_config (1250us) {path=app.toml}``; a failure with its back-trace, outermost frame
    first.

    .. versionadded:: 0.1
    """

    def __init__(
        self, include_metadata: bool = True, include_timing: bool = True, include_thread: bool = False
    ):
        self.include_metadata = include_metadata
        self.include_timing = include_timing
        self.include_thread = include_thread

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> str:
        record = event_dict.get("_record")
        ev = getattr(record, "trace_event", None)
        if ev is not None:
            return trace_line(
                ev,
                getattr(record, "trace_tag", "[TRACE]"),
                getattr(record, "trace_note", ""),
                include_metadata=self.include_metadata,
                include_timing=self.include_timing,
                include_thread=self.include_thread,
            )
        level = _safety.safe_str(event_dict.get("level") or method_name).upper()
        skip = {"event", "level", "exc_info", "_record", "_from_structlog", "timestamp"}
        event = event_dict.get("event", "")
        formatted, _ = _positional(event, event_dict.get("positional_args"))
        if formatted is not None:  # (as PerfettoProcessor writes it: the message, not the template + args)
            event = formatted
            skip.add("positional_args")
        # Scrubbed as the trace has it (the scrubs are counted once, where the event is recorded).
        rest = sanitize_metadata(
            {k: v for k, v in event_dict.items() if k not in skip}, RT.config.limits, Counts()
        )
        parts = [f"[{level}]"]
        if "timestamp" in event_dict:
            parts.insert(0, _safety.safe_str(event_dict["timestamp"]))
        limits = RT.config.limits
        parts.append(scrub_text(_safety.safe_str(event), limits))
        if self.include_metadata and rest:
            parts.append(format_metadata(rest))
        line = " ".join(parts)
        exc = _exc_info(event_dict.get("exc_info"))
        if exc is not None:
            line += "\n" + scrub_text(error_info(exc[0], exc[1]).format(), limits)
        return line
