"""fork() while recording: the parent writes what is queued first; the child records into a file of its
own (``trace.<pid>.perfetto-trace``) with a fresh writer, and drops (and counts) what it inherited."""

from __future__ import annotations

import os
from pathlib import Path

from .. import _safety
from . import lifecycle
from .runtime import (
    RT,
    threads_after_fork,
)
from .session import Session


def _before_fork() -> None:
    session = RT.session
    if session is not None and not session.stopped:
        session._request_round(min(1.0, session.config.timeout))


def _child_path(path: Path, pid: int) -> Path:
    name = path.name
    for ext in (".perfetto-trace", ".pftrace", ".json"):
        if name.endswith(ext):
            return path.with_name(f"{name[: -len(ext)]}.{pid}{ext}")
    return path.with_name(f"{name}.{pid}")


def _after_fork_in_child() -> None:
    # Locks held by threads that do not exist in the child must not be inherited held.
    lifecycle.renew_lock_after_fork()
    inherited = threads_after_fork()
    parent = RT.session
    if parent is None or parent.stopped:
        return
    RT.level = 0
    RT.session = None
    RT.pipeline = None
    RT.compact = False
    path = None if parent.path is None else _child_path(parent.path, os.getpid())
    pipeline = parent.pipeline
    if pipeline is not None:
        pipeline.after_fork()
    try:
        child = Session(parent.level, path, parent.format, parent.config, parent._sink_factory, pipeline)
        if inherited:
            child.count_drop("fork_inherited", "span", inherited)
        child._open()
    except Exception as exc:
        _safety.internal_error("fork", exc, raise_in_strict=False)
        return
    RT.session = child
    RT.pipeline = pipeline
    lifecycle.update_compact()
    RT.level = child.level


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
