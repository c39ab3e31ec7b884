"""Keeps events in a list: in-memory sessions (``tracebridge.start(output=None)``) and tests."""

from __future__ import annotations

from collections.abc import Iterable

from .._model import Event, Loss, Stats, ThreadInfo


class MemorySink:
    """Appends events to ``events`` until it holds ``max_events``; the rest count as ``memory_cap``."""

    drop_reason = "memory_cap"

    def __init__(self, events: list[Event], max_events: int) -> None:
        self.events = events
        self.max_events = max_events

    def write(self, thread: ThreadInfo, events: list[Event], loss: Loss | None = None) -> int:
        room = self.max_events - len(self.events)
        taken = events if len(events) <= room else events[: max(room, 0)]
        self.events.extend(taken)
        return len(taken)

    def flush(self) -> None:
        pass

    def close(self, stats: Stats | None = None, open_activities: Iterable[Event] = ()) -> None:
        for ev in open_activities:
            if len(self.events) < self.max_events:
                self.events.append(ev)


class NullSink:
    """Takes events and keeps none: a session that only feeds trace lines to the log."""

    drop_reason = "sink_error"

    def write(self, thread: ThreadInfo, events: list[Event], loss: Loss | None = None) -> int:
        return len(events)

    def flush(self) -> None:
        pass

    def close(self, stats: Stats | None = None, open_activities: Iterable[Event] = ()) -> None:
        pass
