"""Auto-instrumentation's overhead budget: which functions are demoted (called often, always under their
``min_duration``) in the current generation. A new session or ``instrument()`` call starts a new
generation; a session's stats list the functions demoted while it recorded."""

from __future__ import annotations

from .. import _hooks
from .._model import Stats

#: Functions demoted in the current generation: name -> the calls it saw, all under its min_duration.
demotions: dict[str, int] = {}
#: The current generation (a one-item list, so that wrappers read it without a global statement).
generation = [0]


def new_generation() -> None:
    """Undo every demotion (a new session, or a new instrument() call)."""
    generation[0] += 1
    demotions.clear()


def _report(stats: Stats) -> None:
    stats.demoted = dict(demotions)


_hooks.session_started.append(new_generation)
_hooks.session_closing.append(_report)
