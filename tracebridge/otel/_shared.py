"""What the OpenTelemetry span processors and the bridge share: the spans they have open, the events the
bridge added to spans a processor records, and the scope of the bridge's own spans."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._recorder import Session
    from .._recorder.runtime import ThreadState

#: The instrumentation scope of the OpenTelemetry twins of tracebridge spans (the Perfetto processor
#: leaves them alone: tracebridge records the originals).
BRIDGE_SCOPE = "tracebridge"

#: OpenTelemetry spans begun and not ended yet, by span id: the span, its thread's state, the thread,
#: the recording it began in, and its trace level. Shared by every processor, so that a span is recorded once.
open_spans: dict[int, tuple[Any, ThreadState, int, Session, int]] = {}

#: Events the bridge added to OpenTelemetry spans that a processor of ours records, by span id: the
#: instants they stand for are recorded by tracebridge already.
bridged_events: dict[int, list[Any]] = {}
MAX_BRIDGED_EVENTS = 1024


def plain(obj: Any, private: str, inner: str, public: str) -> Any:
    """``obj.<public>`` (the attributes, events or links of a span or event) without the copy the SDK's
    public property makes, when its container is one we know (a plain dict or deque inside)."""
    container = getattr(obj, private, None)
    if container is not None:
        plain = getattr(container, inner, None)
        if plain is not None:
            return plain
    return getattr(obj, public, None)
