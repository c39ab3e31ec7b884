"""Testing your own instrumentation: record into memory, then look at what came out.

::

    from tracebridge.testing import capture

    def test_checkout_is_traced():
        with capture() as trace:
            checkout(cart)
        assert trace.outline() == "checkout\\n  reserve_stock\\n  charge\\n"
        (charge,) = trace.spans("charge")
        assert charge.metadata["amount"] == 12
        assert trace.failed() == []

With pytest, the fixture ``tracebridge_capture`` (installed with the package) records for the whole test:
``def test_x(tracebridge_capture): ...; assert tracebridge_capture.spans("load")``.

Timestamps and ids differ from run to run; names, nesting, metadata, levels and failures do not, and they
are what :meth:`Captured.outline` shows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ._model import Event, Stats
from ._recorder import Session, start, stop
from ._recorder.runtime import RT
from .logging import PerfettoHandler
from .sinks.lines import format_metadata

__all__ = ["Captured", "capture"]


class Captured:
    """What a :func:`capture` recorded. While it records, reading :attr:`events` first writes what the
    application's threads have queued (spans still open are not there yet); once it has stopped,
    everything is there and :attr:`stats` is final.

    .. versionadded:: 0.1
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    @property
    def events(self) -> list[Event]:
        """Every event recorded so far, in the order they began."""
        session = self.session
        if not session.stopped:
            session.flush()
        return sorted(session.events, key=lambda e: (e.start_ns, -(e.end_ns or e.start_ns)))

    @property
    def stats(self) -> Stats:
        """What was recorded and dropped (final once the capture has stopped)."""
        return self.session.stats

    def spans(self, name: str | None = None) -> list[Event]:
        """The spans (all of them, or those named ``name``), in the order they began."""
        return self._of("span", name)

    def instants(self, name: str | None = None) -> list[Event]:
        return self._of("instant", name)

    def logs(self, message: str | None = None) -> list[Event]:
        """The log records (all of them, or those whose message is ``message``)."""
        return self._of("log", message)

    def failed(self) -> list[Event]:
        """The spans that failed (an exception, or :meth:`tracebridge.Span.fail`)."""
        return [e for e in self.spans() if e.error is not None]

    def children(self, parent: Event) -> list[Event]:
        """The events recorded directly inside the span ``parent``, in the order they began (none for
        an event that is not a span)."""
        if parent.kind != "span" or not parent.span_id:
            return []
        return [e for e in self.events if _parent_of(e) == parent.span_id]

    def outline(self, kinds: Iterable[str] = ("span",), *, metadata: bool = False) -> str:
        """The recorded events as an indented tree, one line each: its name, ``[ErrorType]`` when it
        failed, and its metadata with ``metadata=True``. Events whose parent was not recorded (and
        activities, which cross threads) are at the top. ``kinds`` says which kinds of events to show
        (``"span"``, ``"instant"``, ``"log"``, ``"activity"``, ``"counter"``)."""
        wanted = set(kinds)
        shown = [e for e in self.events if e.kind in wanted]
        spans = {e.span_id for e in shown if e.kind == "span" and e.span_id}
        below: dict[int, list[Event]] = {}
        for e in shown:
            parent = _parent_of(e)
            below.setdefault(parent if parent in spans else 0, []).append(e)
        lines: list[str] = []

        def walk(parent: int, depth: int) -> None:
            for e in below.get(parent, ()):
                line = "  " * depth + e.name
                if e.error is not None:
                    line += f" [{e.error.type}]"
                if metadata and e.metadata:
                    line += " " + format_metadata(e.metadata)
                lines.append(line)
                if e.kind == "span" and e.span_id:
                    walk(e.span_id, depth + 1)

        walk(0, 0)
        return "".join(line + "\n" for line in lines)

    def _of(self, kind: str, name: str | None) -> list[Event]:
        return [e for e in self.events if e.kind == kind and (name is None or e.name == name)]

    def __repr__(self) -> str:
        state = "stopped" if self.session.stopped else "recording"
        return f"<Captured {state}: {len(self.session.events)} events>"


def _parent_of(e: Event) -> int:
    """The span id of the span ``e`` happened in: a span carries its own id and its parent's; an
    instant, counter sample or log record carries the id of the span that was current; an activity,
    its own id only."""
    return e.parent_id if e.kind in ("span", "activity") else e.span_id


@contextmanager
def capture(level: int = 3, *, sampling: Any = None, logs: bool = True) -> Iterator[Captured]:
    """Record events of ``level`` and below into memory while the block runs (``sampling`` as for
    :func:`tracebridge.start`; by default nothing is sampled out, though ``TRACEBRIDGE_FILTER``, when
    set, applies as it does to every recording). With ``logs`` (the default), log records that reach
    the root logger are recorded too, through a handler added to it for the block (the loggers' own
    levels still apply, as they do for pytest's ``caplog``). Starting while another recording is
    active raises, as :func:`tracebridge.start` does; if the code under test stops the recording
    itself, the capture ends there.

    .. versionadded:: 0.1
    """
    session = start(level=level, sampling=sampling if sampling is not None else [])
    handler = PerfettoHandler(session) if logs else None
    root = logging.getLogger()
    if handler is not None:
        root.addHandler(handler)
    try:
        yield Captured(session)
    finally:
        if handler is not None:
            root.removeHandler(handler)
        if RT.session is session:
            stop()
