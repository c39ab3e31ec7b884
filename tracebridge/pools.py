"""Trace context into thread and process pools: a task's spans are children of the span that submitted it.

While tracebridge records, the functions handed to ``concurrent.futures``' ``ThreadPoolExecutor`` and
``ProcessPoolExecutor`` (``submit``, and ``map`` through it) and to ``multiprocessing``'s ``Pool`` and
``ThreadPool`` (``apply``, ``map``, ``starmap``, ``imap``, ``imap_unordered`` and their ``_async`` forms)
are wrapped, when a span is current, in a :class:`Task`. The task runs as a span of its own, named after
its function (level 2, ``pool.task``), whose parent is the submitting span: in another thread the span
itself, in another process a stand-in with its ids (:class:`RemoteParent`, which pickles with the task).
A task submitted as one call (``submit``, ``apply``) gets a flow from the submitting span that ends at
its span, so the Perfetto UI draws an arrow from where it was submitted to where it ran, across threads
and processes (a ``map``'s calls are children of the span without arrows: one flow ends once). With no
span current, or nothing recording, the function is handed on unwrapped.

``configure(pools=False)`` turns this off (the methods stay patched, and hand functions on unwrapped).
"""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable
from typing import Any

from . import _hooks, _safety
from ._model import SpanRecord
from ._recorder.runtime import RT, current
from .events import flow
from .spans import RemoteParent, Span, span

#: The level of the span a task runs as.
TASK_LEVEL = 2


class Task:
    """A function submitted to a pool while ``parent`` was the current span: called, it runs as the span
    ``name`` (a child of ``parent``, ending the flow ``flow_id``). Pickled (for a process pool), it takes
    the parent's ids instead of the parent."""

    __slots__ = ("__weakref__", "context", "flow_id", "fn", "name", "parent")

    def __init__(
        self,
        fn: Callable[..., Any],
        parent: SpanRecord,
        flow_id: int,
        name: str,
        context: contextvars.Context | None = None,
    ) -> None:
        self.fn = fn
        self.parent = parent
        self.flow_id = flow_id
        self.name = name
        #: The submitter's context, for a task run in this process (a thread pool), so that everything
        #: it carries (OpenTelemetry's current span too) is the task's; each call runs in a copy of it.
        #: A task pickled into another process leaves it behind.
        self.context = context

    def __reduce__(self) -> tuple[Any, ...]:
        p = self.parent
        return (_remote_task, (self.fn, p.trace_id, p.span_id, bool(p.sampled), self.flow_id, self.name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.context is not None:
            return self.context.copy().run(self._run, args, kwargs)
        return self._run(args, kwargs)

    def _run(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = current.set(self.parent)
        try:
            extra = {"terminating_flows": [self.flow_id]} if self.flow_id else {}
            with span(self.name, level=TASK_LEVEL, **extra):
                return self.fn(*args, **kwargs)
        finally:
            current.reset(token)

    def __repr__(self) -> str:
        return f"<tracebridge task {self.name} of {self.fn!r}>"


def _remote_task(
    fn: Callable[..., Any], trace_id: int, span_id: int, sampled: bool, flow_id: int, name: str
) -> Task:
    return Task(fn, RemoteParent.of_ids(trace_id, span_id, sampled, TASK_LEVEL), flow_id, name)


def _name(fn: Any) -> str:
    while isinstance(fn, functools.partial):
        # (ProcessPoolExecutor.map submits chunks of fn's calls: named after fn)
        fn = fn.args[0] if fn.func is _process_chunk and fn.args else fn.func
    qualname = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", "task")
    return f"pool.task {qualname}"


def _carries_its_context(fn: Any) -> bool:
    """``partial(context.run, f)``, as ``asyncio.to_thread`` submits: it runs in the submitter's context
    (its current span too) already."""
    return (
        isinstance(fn, functools.partial)
        and getattr(fn.func, "__name__", None) == "run"
        and isinstance(getattr(fn.func, "__self__", None), contextvars.Context)
    )


#: Arrows one span points at tasks with, at most (a span's metadata lists are bounded; a span that
#: submits more has the rest of its tasks as children without arrows).
MAX_ARROWS = 256
_arrows_lock = threading.Lock()
_mapping = threading.local()  # (inside Executor.map: its submits are the map's calls)


def wrap(fn: Any, arrow: bool = True) -> Any:
    """``fn`` as a :class:`Task` of the current span, or ``fn`` itself when there is no span to follow.
    ``arrow``: the task is one call, which a flow from the current span points to (a ``map``'s function
    is called once an item: its calls are the span's children, without arrows)."""
    if (
        RT.session is None
        or not RT.config.pools
        or isinstance(fn, Task)
        or not callable(fn)
        or getattr(_mapping, "active", False)
        or _carries_its_context(fn)
    ):
        return fn
    parent = current.get()
    if not isinstance(parent, Span):
        return fn
    try:
        flow_id = 0
        if arrow and parent.sampled and not parent._ended():
            with _arrows_lock:
                md = parent.metadata
                flows = md.get("flows") if md is not None else None
                if flows is None:
                    flow_id = flow()
                    parent.set(flows=[flow_id])
                elif type(flows) is list and len(flows) < MAX_ARROWS:
                    flow_id = flow()
                    flows.append(flow_id)
        return Task(fn, parent, flow_id, _name(fn), contextvars.copy_context())
    except Exception as exc:
        _safety.internal_error("pools", exc)
        return fn


# -- the methods that take the functions -------------------------------------------------------------


def _patch(cls: type, method: str, arrow: bool, mapping: bool = False) -> None:
    """Make ``cls.method`` wrap its first argument (by position, or as ``fn``/``func``). ``mapping``:
    the method submits the function once an item (``Executor.map``): those submits are not wrapped
    again."""
    original = getattr(cls, method)
    if getattr(original, "__tracebridge__", False):
        return

    @functools.wraps(original)
    def patched(self: Any, *args: Any, **kwargs: Any) -> Any:
        if RT.session is None:
            return original(self, *args, **kwargs)
        if args:
            args = (wrap(args[0], arrow), *args[1:])
        else:
            for key in ("fn", "func"):
                if key in kwargs:
                    kwargs[key] = wrap(kwargs[key], arrow)
        if not mapping:
            return original(self, *args, **kwargs)
        _mapping.active = True
        try:
            return original(self, *args, **kwargs)
        finally:
            _mapping.active = False

    patched.__tracebridge__ = True  # type: ignore[attr-defined]
    setattr(cls, method, patched)


_process_chunk: Any = None


def install(session: Any = None) -> None:
    """Patch the pools' methods, as the first session begins (they hand functions on unwrapped while
    nothing records)."""
    global _process_chunk
    if _process_chunk is not None:
        return
    import concurrent.futures
    import concurrent.futures.process
    import multiprocessing.pool

    _process_chunk = concurrent.futures.process._process_chunk  # (not public: recognised, not called)
    for executor in (concurrent.futures.ThreadPoolExecutor, concurrent.futures.process.ProcessPoolExecutor):
        _patch(executor, "submit", True)
        _patch(executor, "map", False, mapping=True)
    _patch(multiprocessing.pool.Pool, "apply_async", True)
    for method in ("_map_async", "imap", "imap_unordered"):
        _patch(multiprocessing.pool.Pool, method, False)


_hooks.session_began.append(install)
