"""Where integrations plug into the recorder and the span API without the recorder knowing them.

* :class:`SpanHook`: an integration every recorded span goes through (the OpenTelemetry bridge: each
  span gets an OpenTelemetry twin). ``tracebridge.configure(otel=...)`` installs one.
* ``before_stop``, ``session_started``, ``session_closing``: callables the recorder calls at those
  moments of every session (the logging bridge reports floods before a session stops; auto-
  instrumentation starts a new budget generation with each session and adds its demotions to the
  session's stats).
* ``session_began``, ``session_ended``: called with the session once it records, and once its file is
  closed (child processes and SIGTERM plug in there: ``_recorder/children.py``); ``child_state``: what
  a spawned child takes over from its parent (auto-instrumentation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ._model import Record, SpanRecord, Stats


class SpanHook(Protocol):
    """An integration that every span of the span API goes through while it is installed.

    The span API makes its spans of ``span_class`` (recorded) and ``dropped_class`` (dropped by head
    sampling, recorded only if they fail): subclasses of :class:`tracebridge.Span` whose ``__enter__``
    and ``__exit__`` call the integration. ``begin`` is called as a span is made, before anything else
    sees it, and gives it its ids (``span.trace_id``, ``span.span_id``).
    """

    span_class: type[Any]
    dropped_class: type[Any]

    def begin(self, span: SpanRecord) -> None: ...

    def instant(self, rec: Record) -> None:
        """An instant recorded now, on the current thread."""
        ...

    def ended_call(self, name: str, start_ns: int, end_ns: int, exc: BaseException | None) -> None:
        """A call recorded after the fact (auto-instrumentation's ``min_duration`` path)."""
        ...


#: Makes the SpanHook that ``configure(otel=value)`` asks for (the package installs OpenTelemetry's
#: bridge here: the recorder does not know its integrations).
span_hook_factory: Callable[[Any], SpanHook] | None = None

#: Called (no arguments) when a session is about to stop, while it still records.
before_stop: list[Callable[[], None]] = []
#: Called (no arguments) when a session starts.
session_started: list[Callable[[], None]] = []
#: Called with a session's stats as it closes its output (before they are written).
session_closing: list[Callable[[Stats], None]] = []
#: Called with a session once it records (its writer running), and once it is stopped and its file closed.
session_began: list[Callable[[Any], None]] = []
session_ended: list[Callable[[Any], None]] = []
#: What a spawned child process takes over from its parent, by the name of the module that registers it
#: (the child imports it): ``capture()`` in the parent gives a picklable value (``None``: nothing),
#: ``apply(value)`` in the child, before it starts recording.
child_state: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
