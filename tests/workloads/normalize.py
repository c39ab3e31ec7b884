"""What the workloads print of the events they recorded, normalized so that two runs (the compiled path
and the pure one) compare equal: times relative to the first event, threads numbered in order of
appearance, metadata sorted, a failure as its type, message and depth."""

from __future__ import annotations

import tracebridge


def normalized(
    events: list[tracebridge.Event], *, ids: bool = True, ignore: frozenset[str] = frozenset()
) -> list[list[object]]:
    """``events`` as comparable rows: with their ids and flows unless ``ids`` is false (ids drawn at
    random), without the metadata keys in ``ignore`` (a line number that differs between the paths'
    wrappers, say)."""
    threads: dict[int, int] = {}
    base = min(e.start_ns for e in events)
    out = []
    for e in sorted(events, key=lambda e: (e.start_ns, e.name)):
        tid = threads.setdefault(e.thread_id, len(threads))
        error = None if e.error is None else [e.error.type, e.error.message, len(e.error.frames)]
        end = None if e.end_ns is None else e.end_ns - base
        md = repr(sorted((k, v) for k, v in e.metadata.items() if k not in ignore))
        row = [e.kind, e.name, e.start_ns - base, end, e.level, md, tid, e.thread_name, error]
        row += [list(e.categories), e.track, e.overlapping]
        out.append([*row, list(e.flows), e.trace_id, e.span_id, e.parent_id] if ids else row)
    return out
