"""Trace lines: an event as one readable line, ``[TRACE] load_config (1250us) {path=app.toml}``.

TraceMe's logger bridge printed ended spans with their durations; this module renders any event that way
(the logging integration sends them to a logger). Text is made safe for a log: lone surrogates and
control characters are escaped, not dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._model import GC_CATEGORY, Event

_UNITS = (("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000))


def format_duration(ns: int) -> str:
    """A duration with the largest unit that still shows at least two significant digits:
    ``850ns``, ``1250us``, ``12ms``, ``15s``."""
    for unit, size in _UNITS:
        if ns >= 10 * size:
            return f"{round(ns / size)}{unit}"
    return f"{ns}ns"


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    return text


#: Metadata key prefixes left out of lines: OpenTelemetry's bookkeeping, and where code is (``code.*``).
_TRACE_ONLY = ("otel.", "code.")


def format_metadata(metadata: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{_text(k)}={_text(v)}" for k, v in metadata.items()) + "}"


def format_event(
    ev: Event,
    *,
    include_metadata: bool = True,
    include_timing: bool = True,
    include_thread: bool = False,
    tag: str = "[TRACE]",
) -> str:
    """One line for ``ev``: tag, name, duration, metadata, thread, and the error if it failed."""
    parts = [tag, _text(ev.name)]
    if include_timing and ev.end_ns is not None and ev.kind in ("span", "activity"):
        parts.append(f"({format_duration(ev.end_ns - ev.start_ns)})")
    if ev.kind == "counter":
        parts.append(f"= {_text(ev.value)}" + (f" {ev.unit}" if ev.unit else ""))
    if include_metadata and ev.metadata:
        md = ev.metadata
        if any(k.startswith(_TRACE_ONLY) for k in md):  # bookkeeping and source locations: trace only
            md = {k: v for k, v in md.items() if not k.startswith(_TRACE_ONLY)}
        if md:
            parts.append(format_metadata(md))
    if include_thread:
        parts.append(f"[{_text(ev.thread_name)}:{ev.thread_id}]")
    if ev.error is not None:
        parts.append(f"failed: {_text(ev.error.type)}: {_text(ev.error.message)}")
    return " ".join(parts)


def trace_line(
    ev: Event,
    tag: str = "[TRACE]",
    note: str = "",
    *,
    include_metadata: bool = True,
    include_timing: bool = True,
    include_thread: bool = False,
) -> str:
    """A trace line: the event's line, a note (why it is a warning), and a failure's back-trace."""
    line = format_event(
        ev,
        include_metadata=include_metadata,
        include_timing=include_timing,
        include_thread=include_thread,
        tag=tag,
    )
    if note:
        line = f"{line} {note}"
    error = ev.error
    if error is not None:
        out = [line, *(f"  {f}" for f in error.frames)]
        link = error
        while link.cause is not None:  # the chain, nearest cause first
            cause = link.cause
            how = "caused by" if link.explicit_cause else "raised while handling"
            out.append(f"{how} {_text(cause.type)}: {_text(cause.message)}")
            out.extend(f"  {f}" for f in cause.frames)
            link = cause
        line = "\n".join(out)
    return line


class TraceLines:
    """Logs every span that ends as a trace line on the ``tracebridge.trace`` logger (TraceMe's logger
    bridge): ``[TRACE] load_config (1250us) {path=app.toml}``.

    ``level`` is the logging level of ordinary lines; spans of trace level above ``max_level`` are not
    logged; ``filter(event) -> bool`` selects events. ``slow`` (a duration, or a mapping of name globs to
    durations, first match wins) logs a span over its threshold at WARNING as ``[SLOW]``; a span that
    takes more than ``anomaly`` times the rolling mean of its operation (after ``anomaly_after`` spans of
    it) is logged at WARNING as ``[ANOMALY]``; a failed span is logged at ERROR with its back-trace.
    The garbage collector's pauses (``configure(runtime=True)``) are logged only when longer than
    ``gc_pause`` (a duration; ``None``: never), at WARNING as ``[SLOW]``.

    Runs on the writer thread: the application's threads never format or write a line. Each record
    carries the span's end time, thread and the event itself (``record.trace_event``).
    """

    def __init__(
        self,
        *,
        logger: str = "tracebridge.trace",
        level: int | str = logging.INFO,
        max_level: int = 2,
        slow: Any = None,
        anomaly: float | None = 3.0,
        anomaly_after: int = 10,
        filter: Callable[[Event], Any] | None = None,
        include_metadata: bool = True,
        include_timing: bool = True,
        include_thread: bool = False,
        gc_pause: Any = "10ms",
    ) -> None:
        from .._globs import GlobTable
        from .._units import parse_duration

        if isinstance(level, str):
            resolved = logging.getLevelName(level.upper())
            if not isinstance(resolved, int):
                raise ValueError(f"log_lines level: unknown logging level {level!r}")
            level = resolved
        if isinstance(level, bool) or not isinstance(level, int):
            raise ValueError(f"log_lines level must be a logging level, got {level!r}")
        if isinstance(max_level, bool) or not isinstance(max_level, int) or max_level < 1:
            raise ValueError(f"log_lines max_level must be a trace level >= 1, got {max_level!r}")
        if anomaly is not None and (
            isinstance(anomaly, bool) or not isinstance(anomaly, (int, float)) or anomaly <= 1
        ):
            raise ValueError(f"log_lines anomaly must be a factor greater than 1 (or None), got {anomaly!r}")
        if filter is not None and not callable(filter):
            raise ValueError(f"log_lines filter must be callable, got {filter!r}")
        self.logger = logging.getLogger(logger)
        self.level = level
        self.max_level = max_level
        if slow is None:
            self._slow: GlobTable | None = None
        elif isinstance(slow, dict):
            table = {k: parse_duration(v, f"log_lines slow[{k!r}]") for k, v in slow.items()}
            self._slow = GlobTable(table, "log_lines slow")
        else:
            self._slow = GlobTable({"*": parse_duration(slow, "log_lines slow")}, "log_lines slow")
        self.gc_pause = None if gc_pause is None else parse_duration(gc_pause, "log_lines gc_pause")
        self.anomaly = None if anomaly is None else float(anomaly)
        self.anomaly_after = anomaly_after
        self.filter = filter
        self.include_metadata = include_metadata
        self.include_timing = include_timing
        self.include_thread = include_thread
        self._means: dict[str, tuple[int, float]] = {}  # operation -> (spans seen, rolling mean ns)

    def observe(self, events: list[Event], wall_offset_ns: int) -> None:
        """Log the spans among ``events`` (called on the writer thread)."""
        logger = self.logger
        for ev in events:
            if ev.kind != "span" or ev.end_ns is None or ev.level > self.max_level:
                continue
            if self.filter is not None and not self.filter(ev):
                continue
            duration = ev.end_ns - ev.start_ns
            if GC_CATEGORY in ev.categories:  # a collector's pause: a line only when it is long
                limit = self.gc_pause
                if limit is None or duration <= limit:
                    continue
                level, tag, note = logging.WARNING, "[SLOW]", f"over {format_duration(limit)}"
            else:
                level, tag, note = self._judge(ev, duration)
            if not logger.isEnabledFor(level):
                continue
            line = trace_line(
                ev, tag, note, include_metadata=self.include_metadata, include_timing=self.include_timing,
                include_thread=self.include_thread,
            )  # fmt: skip
            extra: dict[str, Any] = {"trace_event": ev, "trace_tag": tag, "trace_note": note}
            if ev.trace_id:
                extra["trace_id"] = f"{ev.trace_id:032x}"
                extra["span_id"] = f"{ev.span_id:016x}"
                extra["span_name"] = ev.name
                extra["sampled"] = "1"
            record = logger.makeRecord(logger.name, level, "", 0, line, (), None, ev.name, extra)
            wall = (ev.end_ns + wall_offset_ns) / 1e9
            record.created = wall
            record.msecs = (wall - int(wall)) * 1000
            record.thread = ev.thread_id
            record.threadName = ev.thread_name
            logger.handle(record)

    def _judge(self, ev: Event, duration: int) -> tuple[int, str, str]:
        if ev.error is not None:
            return logging.ERROR, "[TRACE]", ""
        if self._slow is not None:
            limit = self._slow.lookup(ev.name)
            if limit is not None and duration > limit:
                return logging.WARNING, "[SLOW]", f"over {format_duration(limit)}"
        if self.anomaly is not None:
            seen, mean = self._means.get(ev.name, (0, 0.0))
            self._means[ev.name] = (
                seen + 1,
                duration if seen == 0 else mean + (duration - mean) / min(seen + 1, 50),
            )
            if len(self._means) > 10_000:
                self._means.clear()
            if seen >= self.anomaly_after and mean > 0 and duration > self.anomaly * mean:
                return (
                    logging.WARNING,
                    "[ANOMALY]",
                    f"{duration / mean:.1f}x its mean {format_duration(int(mean))}",
                )
        return self.level, "[TRACE]", ""
