"""tracebridge: spans, log records, OpenTelemetry spans and instrumented calls as one event stream,
written as Perfetto traces (and Chrome JSON) and as readable trace lines.

Quick start::

    import tracebridge

    tracebridge.start(level=2, output="trace.perfetto-trace")
    with tracebridge.span("load_config", path="app.toml"):
        ...
    session = tracebridge.stop()   # open session.path in https://ui.perfetto.dev
"""

from __future__ import annotations

from . import _hooks, pools, sampling  # noqa: F401  (pools: patches the pools as the first session begins)
from ._accel import accelerated
from ._codec import decode, encode
from ._config import Config
from ._model import ErrorInfo, Event, Frame, Stats
from ._recorder import Session, configure, flush, shutdown, start, stats, stop
from .events import activity_end, activity_start, backtrace, counter, flow, instant
from .reading import ReadLimits, TraceReadError, read
from .spans import Span, active, current_span, span, traced

__version__ = "0.1.0.dev0"


def _opentelemetry_bridge(value: object) -> _hooks.SpanHook:
    """What ``configure(otel=True | provider)`` installs (imported only then: OpenTelemetry is heavy)."""
    from .otel import Bridge

    return Bridge(None if value is True else value)


_hooks.span_hook_factory = _opentelemetry_bridge

__all__ = [
    "Config",
    "ErrorInfo",
    "Event",
    "Frame",
    "ReadLimits",
    "Session",
    "Span",
    "Stats",
    "TraceReadError",
    "__version__",
    "accelerated",
    "active",
    "activity_end",
    "activity_start",
    "backtrace",
    "configure",
    "counter",
    "current_span",
    "decode",
    "encode",
    "flow",
    "flush",
    "instant",
    "read",
    "sampling",
    "shutdown",
    "span",
    "start",
    "stats",
    "stop",
    "traced",
]
