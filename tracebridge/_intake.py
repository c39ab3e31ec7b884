"""What every source does with what it is given before it queues a record: values the application
could still change are copied (sanitized, scrubbed) now, and records pass the session's head sampling."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._model import Record
from ._recorder.runtime import RT, current
from ._sanitize import Counts, sanitize_metadata

if TYPE_CHECKING:
    from .sampling.pipeline import Pipeline


def admit(pipe: Pipeline, rec: Record) -> bool:
    """Run a record (instant, activity, log) through the head stages (see :meth:`Pipeline.admit`),
    inside the span current now; True if it is kept."""
    parent = current.get()
    rec.parent = parent
    return pipe.admit(rec, parent)


def snapshot_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Convert, on the application's thread, the values it could still change after the event ends
    (containers, objects). ``category`` and ``track`` stay as given: the writer reads them."""
    keep: dict[str, Any] = {k: metadata[k] for k in ("category", "track") if k in metadata}
    rest = {k: v for k, v in metadata.items() if k not in keep}
    counts = Counts()
    out = {**sanitize_metadata(rest, RT.config.limits, counts), **keep}
    session = RT.session
    if session is not None and (counts.sanitized or counts.scrubbed):
        session.add_counts(counts)
    return out
