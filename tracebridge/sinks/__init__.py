"""Where events go: a Perfetto protobuf file, a Chrome JSON file, or memory.

A sink receives batches of :class:`~tracebridge.Event` from the writer thread, one thread's events at a
time, and never sees the application's threads. Sinks import only the event model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from .._model import Event, Loss, Stats, ThreadInfo

if TYPE_CHECKING:
    from .._recorder import Session


class Sink(Protocol):
    #: The reason events are counted under when ``write`` does not take all of them.
    drop_reason: str

    def write(self, thread: ThreadInfo, events: list[Event], loss: Loss | None = None) -> int:
        """Take a batch of one thread's events; return how many were taken (the rest are dropped).
        ``loss``: the thread's events that were lost just before this batch (the batch may be empty
        then). A file sink marks the place, and nothing it writes after the gap may depend on state
        written before it: a loss must never hide what follows."""
        ...

    def flush(self) -> None: ...

    def close(self, stats: Stats | None = None, open_activities: Iterable[Event] = ()) -> None: ...


def open_sink(session: Session) -> Sink:
    """The sink for a session's output (raises OSError at once when the path cannot be written)."""
    from ..sinks.memory import MemorySink, NullSink

    if session.format == "memory":
        return MemorySink(session.events, session.config.max_events)
    if session.format == "none":
        return NullSink()
    assert session.path is not None
    start_ts = session.start_ns + session.clock_offset
    if session.format == "json":
        from .chrome import ChromeJsonWriter

        return ChromeJsonWriter(session.path)
    from .perfetto.writer import PerfettoWriter

    return PerfettoWriter(session.path, start_ts=start_ts, compress=session.config.compress)
