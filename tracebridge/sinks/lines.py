"""Trace lines: an event as one readable line, ``[TRACE] load_config (1250us) {path=app.toml}``.

TraceMe's logger bridge printed ended spans with their durations; this module renders any event that way
(the logging integration sends them to a logger). Text is made safe for a log: lone surrogates and
control characters are escaped, not dropped.
"""

from __future__ import annotations

from typing import Any

from .._model import Event

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
        parts.append(format_metadata(ev.metadata))
    if include_thread:
        parts.append(f"[{_text(ev.thread_name)}:{ev.thread_id}]")
    if ev.error is not None:
        parts.append(f"failed: {_text(ev.error.type)}: {_text(ev.error.message)}")
    return " ".join(parts)
