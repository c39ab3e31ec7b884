"""Where the sources that name a trace file send their events: logging's ``PerfettoHandler``,
structlog's ``PerfettoProcessor``, OpenTelemetry's ``PerfettoSpanProcessor`` and ``PerfettoSpanExporter``.

A source lives as long as logging (or the program) does, longer than any one session. The rule:

* a source for a file records into whichever session records that file now: the one it started, a
  ``start(output=<that file>)`` after a ``stop()``, or in a forked or spawned child the child's share of
  that recording (see ``children.py``);
* one trace file at a time: a source for another file than the one being recorded writes nothing. It
  never raises for it (a ``dictConfig`` with two such handlers installs the rest of its configuration);
  it says so once on stderr, and counts its events in its ``dropped`` and in the active session's stats
  as ``other_file``;
* while nothing records its file (after ``stop()``), its events are counted in its ``dropped``, said once;
* a logging handler whose file cannot be written says so in one line and writes nothing (the rest of a
  ``dictConfig`` is installed); the other sources raise ``OSError`` at setup.
"""

from __future__ import annotations

import os

from .. import _safety
from .children import inheriting
from .lifecycle import OtherFileError, record_into
from .runtime import RT
from .session import Session


class Target:
    """The recording of one trace file (or one given :class:`Session`) for a source of events of
    ``kind`` (``"log"`` or ``"span"``); ``who`` names the source in what it says on stderr."""

    def __init__(
        self,
        target: str | os.PathLike[str] | Session,
        level: int,
        kind: str,
        who: str,
        *,
        quiet_io: bool = False,
    ) -> None:
        self.kind = kind
        self.who = who
        self.dropped = 0
        self._said: set[str] = set()
        self.fixed: Session | None = None
        self.path: str | None = None
        self.current: Session | None
        if isinstance(target, Session):
            self.fixed = self.current = target
            self.name = str(target.path) if target.path is not None else f"<{target.format}>"
            return
        self.name = os.fspath(target)
        self.path = os.path.abspath(self.name)
        if inheriting():
            # A spawned child importing its parent's main module (a handler made at import): the file is
            # the parent's, whose share this process records once it has unpickled its process object.
            self.current = None
            return
        try:
            self.current = record_into(target, level, who)
        except OtherFileError:  # another file is being recorded: this source writes nothing (said once)
            self.current = None
            self._say("other_file")
        except OSError as exc:
            if not quiet_io:
                raise
            # (a logging handler: dictConfig installs the rest of its configuration)
            self.current = None
            self._said.update(("stopped", "other_file"))  # (nothing more to say about it)
            _safety.report(
                f"tracebridge: {who} for {self.name} writes nothing: the file cannot be written "
                f"({type(exc).__name__}: {exc}); its events are counted, not written"
            )

    def session(self, events: int = 1) -> Session | None:
        """The session to queue ``events`` into now, or ``None`` (then they are counted as dropped)."""
        s = RT.session
        if s is not None and s is self.current:
            return s
        if s is not None and self._records_mine(s):
            self.current = s
            return s
        self.dropped += events
        if s is not None:
            s.count_drop("other_file", self.kind, events)
            self._say("other_file")
        else:
            self._say("stopped")
        return None

    def _records_mine(self, s: Session) -> bool:
        if self.fixed is not None:  # (or, in a child process, its share of that session's file)
            return s is self.fixed or (s.root is not None and s.root == self.fixed.path)
        return any(p is not None and str(p) == self.path for p in (s.path, s.root))

    def _say(self, why: str) -> None:
        if why in self._said:
            return
        self._said.add(why)
        if why == "other_file":
            active = RT.session
            where = active.path if active is not None and active.path is not None else "another recording"
            text = (
                f"{self.who} for {self.name} writes nothing: tracebridge is recording into {where} (one "
                "trace file at a time); its events are counted as other_file"
            )
        else:
            text = (
                f"{self.who} for {self.name}: the recording stopped; its events are counted, not written, "
                "until that file is recorded again"
            )
        _safety.report(f"tracebridge: {text}")

    def flush(self, timeout: float) -> bool:
        s = self.current
        if s is None or s.stopped:
            return True
        return s.flush(timeout)

    def nudge(self) -> None:
        s = self.current
        if s is not None and not s.stopped:
            s.nudge()

    def __repr__(self) -> str:
        return f"<Target {self.name}>"
