"""The span API: ``span``, ``traced`` and what they make (the other event kinds are in ``events.py``).

A span at a level that is off costs one comparison and a tiny object. A recorded span reads the clock
twice, links itself to its parent through a context variable (so asyncio tasks and threads each have
their own current span), keeps its thread's stack of open spans (to find spans that overlap without
nesting), and at exit appends itself to its thread's queue. Everything else (names split from TraceMe's
encoded form, metadata sanitized and scrubbed, encoding) happens on the writer thread.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import _safety
from ._accel import speedups
from ._backtrace import error_info, is_failure, wrapper_frame
from ._intake import snapshot_metadata
from ._model import NameOrFactory, SpanRecord, new_trace_id
from ._recorder.runtime import RT, ThreadState, current, now_ns, thread_local, thread_state
from ._sanitize import needs_snapshot
from .sampling.consistent import RANDOMNESS_MASK
from .sampling.pipeline import Pipeline

F = TypeVar("F", bound=Callable[..., Any])

_current = current  # (the current span: the context variable every source reads)
_getrandbits = random.getrandbits
_new = object.__new__


# The other event kinds live in events.py; they are importable from here as they always were.
from ._codec import decode, encode  # noqa: E402
from .events import activity_end, activity_start, backtrace, counter, flow, instant  # noqa: E402

__all__ = [
    "DroppedSpan",
    "Span",
    "active",
    "activity_end",
    "activity_start",
    "backtrace",
    "counter",
    "current_span",
    "decode",
    "decorate",
    "encode",
    "flow",
    "instant",
    "span",
    "traced",
]


def _task_name() -> str | None:
    """The name of the asyncio task running now, if any (asyncio is not imported for it)."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        return None
    return None if task is None else task.get_name()


def active(level: int = 1) -> bool:
    """True when a session is recording events of ``level``: a cheap guard for expensive work.

    .. versionadded:: 0.1
    """
    return level <= RT.level


def current_span() -> Span | None:
    """The innermost open span of the calling task or thread, if one is being recorded."""
    s: Any = _current.get()
    return s if s.__class__ is not RemoteParent else None


class RemoteParent(SpanRecord):
    """The span that submitted a pool task in another process (see ``pools.py``): its ids and sampling
    decision, the parent of the task's span, never recorded here. ``current_span()`` does not return it."""

    __slots__ = ("sampled",)
    _token = 0  # (never ends here: see _skip_ended)

    @classmethod
    def of_ids(cls, trace_id: int, span_id: int, sampled: bool, level: int) -> RemoteParent:
        rec: RemoteParent = cls.of("", level, 0, None, trace_id=trace_id, span_id=span_id)
        rec.sampled = sampled
        return rec


def _skip_ended(restored: Any) -> None:
    """A span's end restored its parent as current, and the parent has ended too (they ended out of
    order: a generator's span closed after the span it was resumed in, spans entered and exited by
    hand): the innermost of its ancestors still open becomes current instead. (A span that ends while
    another is current leaves it current: see the exits.)"""
    if _current.get() is not restored:
        return
    cur = restored
    while cur is not None and getattr(cur, "_token", 0) is None:
        cur = cur.parent
    _current.set(cur)


class _PyScope:
    """A span's ``__enter__`` and ``__exit__`` in Python: the base of :class:`Span` on the pure-Python
    path. The compiled accelerator's ``SpanScope`` does the same (see ``_speedups.c``), calling back into
    Python for what is rare."""

    __slots__ = ()

    def __enter__(self) -> Span:
        # An interrupt (a signal handler raising KeyboardInterrupt after any call returns) must not leave
        # this span current or on its thread's stack when ``with`` never entered: the span becomes
        # current last, and what was done is undone if anything on the way raises.
        span: Span = self  # type: ignore[assignment]  # (a base of Span only)
        stack = None
        try:
            parent = _current.get()
            try:
                st = thread_local.state
            except AttributeError:
                st = thread_state()
            md = span.metadata
            if md is not None and "track" in md:
                span._stack = [span]  # a named track: the writer lays it out, not the thread's stack
            else:
                stack = st.stack
                if stack and stack[-1] is not parent:
                    stack = span._place(st, parent)
                span._stack = stack
            span.parent = parent
            span.start_ns = now_ns()
            if stack is not None:
                stack.append(span)
            token = _current.set(span)
        except BaseException:
            span._undo_enter(stack)
            raise
        span._st = st
        span._token = token
        return span

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        span: Span = self  # type: ignore[assignment]
        st = span._st
        if st is None:  # already stopped
            return None
        # An interrupt at any call below still leaves the span off its stack and no longer current.
        try:
            end = now_ns()
        finally:
            span._st = None
            try:
                stack = span._stack
                if stack and stack[-1] is span:
                    stack.pop()
                else:
                    # Off the stack in one C call, here: a call to Python code could be interrupted
                    # as it begins (so no contextlib.suppress either).
                    try:  # noqa: SIM105
                        stack.remove(span)
                    except ValueError:  # (ended on a thread other than the one it began on)
                        pass
                    span._left_out_of_order(stack)
            finally:
                token = span._token
                span._token = None  # type: ignore[assignment]  # (ended, whatever comes; no token kept)
                # A span begun since that is still open stays current; one that has ended does not.
                resets = True
                try:  # (an interrupt as get() returns: reset all the same)
                    cur: Any = _current.get()
                    resets = cur is span or (cur is not None and cur._token is None)
                finally:
                    if resets:
                        try:
                            _current.reset(token)
                            parent: Any = span.parent
                            if parent is not None and parent._token is None:
                                _skip_ended(parent)  # it ended too (out of order)
                        except ValueError:  # ended in another context than it began in (a task, a thread)
                            parent = span.parent
                            _current.set(parent if isinstance(parent, Span) else None)
        span.end_ns = end
        if exc_type is not None and is_failure(exc_type, exc):
            span.error = error_info(exc, tb)
        rec: Any = span
        if span._lazy is not None:
            span._resolve()
        elif span.metadata is not None:
            if needs_snapshot(span.metadata):
                span._snapshot()
        elif RT.compact and span.error is None and not span.overlapping and not span._trace_id:
            rec = (span.name, span.level, span.start_ns, end)  # (see _recorder.runtime.CompactSpan)
        if st.dead:  # began on a thread that has ended since (a generator finished elsewhere)
            st = thread_state()
        buf = st.buf
        if len(buf) < RT.buffer_soft:
            buf.append(rec)
        else:
            st.crowded(rec)
        return None


#: The base that gives spans their ``with`` behaviour: compiled when the accelerator is built.
if TYPE_CHECKING or speedups is None:  # noqa: SIM108  (mypy takes a class from an if, not a ternary)
    _Scope = _PyScope
else:
    _Scope = speedups.SpanScope


class Span(SpanRecord, _Scope):
    """A recorded span. Use :func:`span` to make one.

    ``with`` opens and closes it; ``set`` and ``append_metadata`` add metadata; ``stop`` ends it early.
    An exception leaving the ``with`` block marks the span failed (type, message, back-trace) and is
    re-raised unchanged. A span object also decorates a function (see :func:`span`).
    """

    __slots__ = ("_drop_counter", "_lazy", "_st", "_stack", "_task", "_token")

    _lazy: list[Callable[[], Mapping[str, Any]]] | None
    _stack: list[SpanRecord]
    _st: ThreadState | None
    _token: contextvars.Token[Span | None]
    _drop_counter: Iterator[int]  # spans sampling dropped: their stage's counter (DroppedSpan)
    _task: str | None  # set on spans that overlap others: the asyncio task they ran in, if any

    def _undo_enter(self, stack: list[Any] | None) -> None:
        """An enter that did not finish, undone (interrupted: see ``_PyScope.__enter__``). Here, not on
        ``_PyScope``: the inlined enter of a traced call uses it with either scope (compiled on 3.12)."""
        if _current.get() is self:
            _current.set(self.parent)  # (what was current before: the same as resetting the token)
        if stack and stack[-1] is self:
            stack.pop()

    def _left_out_of_order(self, stack: list[SpanRecord]) -> None:
        # Another span of this thread began after this one and is still open: the two overlap without
        # nesting (asyncio tasks do this). This one goes on a track of its own (its task's, if any).
        with contextlib.suppress(ValueError):  # ended on a thread other than the one it began on
            stack.remove(self)  # (first: an interrupt in what follows leaves the stack right)
        self.overlapping = True
        self._task = _task_name()

    def _place(self, st: ThreadState, parent: Any) -> list[Any]:
        """The stack this span goes on, when the top of its thread's stack is not its parent. Its parent
        may have begun deeper on this thread, under spans of other asyncio tasks that began since: on
        the thread's track it would be drawn inside those, so it goes on a track of its own (its
        task's), and so do its children (they find its stack through it). Otherwise (no parent, a
        parent on another thread, or an OpenTelemetry span on top that it began inside of) it goes on
        the thread's stack."""
        stack = st.stack
        if (
            isinstance(parent, Span)
            and parent.sampled
            and parent.overlapping
            and getattr(parent, "_st", None) is st  # (a dropped span recorded after all has none)
        ):
            own = parent._stack  # a parent of this thread that is off its stack already: with it
        elif parent is not None and isinstance(stack[-1], Span) and parent in stack:
            own = []
        else:
            return stack
        self.overlapping = True
        self._task = _task_name()
        return own

    def resolve_name(self) -> None:
        """Call the span's lazy name (a callable given to :func:`span`), if it has one: its name is a
        string from then on. A failing callable names the span after its error."""
        name = self.name
        if type(name) is not str:
            try:
                self.name = name() if callable(name) else _safety.safe_str(name)
            except Exception as exc:
                self.name = f"<lazy name failed: {type(exc).__name__}>"
                _safety.internal_error("span.lazy_name", exc)

    def _resolve(self) -> None:
        """Call the lazy name and metadata callables: the span is kept, so their cost is due now."""
        self.resolve_name()
        for fn in self._lazy or ():
            try:
                extra = fn()
                if extra:
                    self._merge(extra)
            except Exception as exc:
                _safety.internal_error("span.append_metadata", exc)
        self._lazy = None
        if self.metadata is not None and needs_snapshot(self.metadata):
            self._snapshot()

    def _snapshot(self) -> None:
        self.metadata = snapshot_metadata(self.metadata or {})

    def _merge(self, extra: Mapping[str, Any]) -> None:
        if self.metadata is None:
            self.metadata = dict(extra)
        else:
            self.metadata.update(extra)

    def _ended(self) -> bool:
        # _st is unset before the span begins and None once it has ended (its record is the writer's).
        return getattr(self, "_st", True) is None

    def set(self, **metadata: Any) -> Span:
        """Add metadata to the span (later values win). Ignored once the span has ended."""
        if not self._ended():
            self._merge(metadata)
        return self

    def append_metadata(self, fn: Callable[[], Mapping[str, Any]]) -> Span:
        """Add the mapping ``fn()`` returns, calling ``fn`` only if the span is recorded (at its end).
        Ignored once the span has ended."""
        if self._ended():
            return self
        if self._lazy is None:
            self._lazy = [fn]
        else:
            self._lazy.append(fn)
        return self

    def fail(self, exc: BaseException, tb: Any = None) -> Span:
        """Mark the span failed with ``exc`` (its type, message and back-trace, or ``tb``) without
        raising anything: for an exception handled inside the span. Logging an exception inside a span
        (``logger.exception(...)`` through tracebridge's logging filter or handler, structlog's
        ``exc_info`` through its processors) does this. A failed span is kept whatever sampling said,
        unless the pipeline was told otherwise. Ignored once the span has ended.

        .. versionadded:: 0.1
        """
        if not self._ended() and getattr(self, "_token", None) is not None:
            self.error = error_info(exc, tb if tb is not None else exc.__traceback__)
        return self

    def stop(self) -> None:
        """End the span now; the end of its ``with`` block then does nothing more."""
        if getattr(self, "_token", None) is not None:
            self.__exit__(None, None, None)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: each call runs in a new span with this span's name, level and metadata."""
        return decorate(fn, self.name, self.level, dict(self.metadata or {}))

    def __repr__(self) -> str:
        return f"<tracebridge.Span {self.name!r} level={self.level}>"


class _OffSpan:
    """What :func:`span` returns when its level is off: does nothing, but still decorates."""

    __slots__ = ("level", "metadata", "name")

    name: NameOrFactory
    level: int
    metadata: dict[str, Any]

    def __enter__(self) -> _OffSpan:
        return self

    # A builtin (not a Python function): cheaper than any ``def``; returns "" so exceptions propagate.
    __exit__ = "".format

    def set(self, **metadata: Any) -> _OffSpan:
        return self

    def append_metadata(self, fn: Callable[[], Mapping[str, Any]]) -> _OffSpan:
        return self

    def fail(self, exc: BaseException, tb: Any = None) -> _OffSpan:
        return self

    def stop(self) -> None:
        pass

    def __call__(self, fn: F) -> F:
        return decorate(fn, self.name, self.level, dict(self.metadata))

    def __repr__(self) -> str:
        return f"<tracebridge.Span {self.name!r} level={self.level} (not recording)>"


def span(name: NameOrFactory, /, level: int = 1, **metadata: Any) -> Any:
    """A span named ``name`` at ``level`` (1 critical, 2 info, 3+ verbose) with ``metadata``.

    Use it as a context manager (``with span("load", path=p) as s:``) or as a decorator
    (``@span("load")``). ``name`` may be a callable, called only if the span is recorded, and may be in
    TraceMe's encoded form ``"name#k=v#"``. Keyword arguments with a meaning of their own:
    ``category`` (a string or several), ``track`` (draw the span on a named track under the process),
    ``flows`` (flow ids this span starts or continues) and ``terminating_flows`` (flow ids it ends).

    .. versionadded:: 0.1
    """
    try:  # (costs nothing unless it raises)
        if level > RT.level:
            off = _new(_OffSpan)
            off.name = name
            off.level = level
            off.metadata = metadata
            return off
    except TypeError:
        raise TypeError(
            f"span level must be an integer (1 critical, 2 info, 3+ verbose), got {level!r}"
        ) from None
    pipe = RT.pipeline
    if pipe is not None:
        parent = _current.get()
        if parent is None:
            threshold = pipe.root_threshold
            if threshold is not None and level > pipe.critical_level and RT.bridge is None:
                # A root decided by one comparison with the trace's randomness (see Pipeline): dropped
                # roots are made here, with only what a dropped span needs.
                tid = _getrandbits(128) or 1
                if (tid & RANDOMNESS_MASK) < threshold:
                    d = _new(DroppedSpan)
                    d.name = name
                    d.level = level
                    d.metadata = metadata or None
                    d.error = None
                    d._lazy = None if type(name) is str else []
                    d.parent = None
                    d._trace_id = tid
                    d._span_id = 0
                    d._drop_counter = pipe.root_drops
                    return d
                return _sampled_span(pipe, None, name, level, metadata or None, tid)
        elif not parent.sampled and level > pipe.short_cut_level:
            # Inside a trace that ParentBased dropped: no more work than a span whose level is off.
            next(pipe.short_cut_drops)
            off = _new(_OffSpan)
            off.name = name
            off.level = level
            off.metadata = metadata
            return off
        return _sampled_span(pipe, parent, name, level, metadata or None)
    # (The fields _made sets, inlined: this is the hottest way a span is made.)
    s = _new(Span)
    s.name = name
    s.level = level
    s.metadata = metadata or None
    s.error = None
    s.overlapping = False
    s.adjusted_count = 1.0
    s._lazy = None if type(name) is str else []
    s._trace_id = s._span_id = 0
    return s


def _made(cls: type[Span], name: NameOrFactory, level: int, metadata: dict[str, Any] | None) -> Span:
    """A span of ``cls`` not yet begun: the one place spans are made, but for the hottest paths
    (:func:`span` without sampling, its dropped roots, and the decorator's ``plain_wrapper``), which set
    these fields themselves: a call costs them about 4% (callgrind, instructions per span)."""
    s = _new(cls)
    s.name = name
    s.level = level
    s.metadata = metadata
    s.error = None
    s.overlapping = False
    s.adjusted_count = 1.0
    s._lazy = None if type(name) is str else []
    s._trace_id = s._span_id = 0
    return s


def _new_span(name: NameOrFactory, level: int, metadata: dict[str, Any] | None) -> Span | _OffSpan:
    pipe = RT.pipeline
    if pipe is not None:
        return _sampled_span(pipe, _current.get(), name, level, metadata)
    return _made(Span, name, level, metadata)


def _sampled_span(
    pipe: Pipeline,
    parent: Any,
    name: NameOrFactory,
    level: int,
    metadata: dict[str, Any] | None,
    trace_id: int = 0,
) -> Span | _OffSpan:
    """A span through the pipeline's head stages: a Span, or a DroppedSpan, or (inside a trace that
    ParentBased dropped) an _OffSpan, which costs no more than a span whose level is off. A root may
    come with its trace id drawn already."""
    critical = level <= pipe.critical_level
    if parent is not None and not parent.sampled and not critical and pipe.follows_parent is not None:
        next(pipe.short_cut_drops)
        off = _new(_OffSpan)
        off.name = name
        off.level = level
        off.metadata = metadata or {}
        return off
    bridge = RT.bridge
    s = _made(Span if bridge is None else bridge.span_class, name, level, metadata)
    s.parent = parent
    if bridge is None:
        # The trace id now: consistent samplers decide by it (no other thread can see this span yet).
        s._trace_id = tid = parent.trace_id if parent is not None else trace_id or new_trace_id()
        s._span_id = 0
    else:  # the hook's span begins now (an OpenTelemetry twin), and gives it its ids
        bridge.begin(s)
        tid = s.trace_id
    if critical:
        pipe.overridden("span")
        return s
    threshold = pipe.root_threshold
    if threshold is not None and parent is None:
        if (tid & RANDOMNESS_MASK) >= threshold:
            pipe.count_root_kept("span")
            if pipe.root_weight != 1.0:
                s.adjusted_count = 1.0 / pipe.root_weight
            return s
        s._drop_counter = pipe.root_decider.dropped_by_kind["span"].counter
        s.__class__ = DroppedSpan if bridge is None else bridge.dropped_class
        return s
    if pipe.needs_name and type(name) is not str:
        s.resolve_name()
    weight, dropped_by = pipe.head(s)
    if dropped_by is None:
        if weight != 1.0:
            s.adjusted_count = 1.0 / weight
        return s
    s._drop_counter = dropped_by.dropped_by_kind["span"].counter
    s.__class__ = DroppedSpan if bridge is None else bridge.dropped_class
    return s


class DroppedSpan(Span):
    """A span the head stages dropped. It is still the current span (its children see that its trace is
    dropped, and logs see its ids), but it is not recorded unless it fails: a failure is kept whatever
    sampling said (``Pipeline(keep_failures=True)``, the default). It stays off its thread's stack, so a
    failure is drawn on a track of its own."""

    __slots__ = ()
    sampled = False
    recorded_class: type[Span] = Span  # what it becomes when it fails after all

    def __enter__(self) -> Span:
        self.start_ns = now_ns()
        before = _current.get()
        try:
            token = _current.set(self)  # (last, as Span.__enter__ does)
        except BaseException:
            if _current.get() is self:
                _current.set(before)
            raise
        self._token = token
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        token = self._token
        if token is None:  # already stopped
            return None
        self._token = None  # type: ignore[assignment]
        resets = True
        try:  # (as _PyScope.__exit__)
            cur: Any = _current.get()
            resets = cur is self or (cur is not None and cur._token is None)
        finally:
            if resets:
                try:
                    _current.reset(token)
                    parent: Any = self.parent
                    if parent is not None and parent._token is None:
                        _skip_ended(parent)  # it ended too (out of order)
                except ValueError:  # ended in another context than it began in
                    _current.set(None)
        if exc_type is None and self.error is None:
            next(self._drop_counter)
            return None
        return self._ended_failing(exc_type, exc, tb)

    if speedups is not None:  # the same two methods, compiled (spans made by the compiled span())
        __enter__ = speedups.dropped_enter
        __exit__ = speedups.dropped_exit

    def _ended_failing(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """It ended with an exception, or was marked failed: recorded after all, unless the pipeline
        says otherwise (``keep_failures``)."""
        pipe = RT.pipeline
        failed = exc_type is not None and is_failure(exc_type, exc)
        if (failed or self.error is not None) and (pipe is None or pipe.keep_failures):
            if pipe is not None:
                pipe.overridden("span")
            self._record_failure(now_ns(), exc if failed else None, tb)
            return None
        next(self._drop_counter)
        return None

    def _record_failure(self, end: int, exc: Any, tb: Any) -> None:
        self.__class__ = self.recorded_class  # type: ignore[assignment]
        self.end_ns = end
        if exc is not None:  # else it was marked failed by fail()
            self.error = error_info(exc, tb)
        self.overlapping = True
        self.adjusted_count = 1.0
        if self._lazy is not None:
            self._resolve()
        elif self.metadata is not None and needs_snapshot(self.metadata):
            self._snapshot()
        thread_state().push(self)


if speedups is not None:  # what the compiled span scope reads
    speedups.configure_spans(
        Span,
        ThreadState,
        RT,
        _current,
        thread_local,
        thread_state,
        now_ns,
        is_failure,
        error_info,
        needs_snapshot,
    )


if speedups is not None:  # span() itself, compiled (it calls the Python one when sampling is on)
    _py_span = span
    span = speedups.make_span(
        _py_span,
        _OffSpan,
        "span(name, /, level=1, **metadata)\n--\n\n" + inspect.cleandoc(_py_span.__doc__ or ""),
    )
    active = speedups.make_active("active(level=1)\n--\n\n" + inspect.cleandoc(active.__doc__ or ""))
    # With sampling on, it makes dropped roots and spans inside dropped traces itself (as span() does).
    speedups.configure_sampling(DroppedSpan, _sampled_span, _getrandbits, RANDOMNESS_MASK)


def set_clock(clock: Callable[[], int] | None) -> None:
    """Stamp spans with ``clock`` (nanoseconds, monotonic) instead of ``time.perf_counter_ns``; ``None``
    puts the real clock back. For tests that need exact durations: set it before a session starts (a
    session's start and the writer keep reading the real clock, so a fake clock should run ahead of it)."""
    global now_ns
    now_ns = clock if clock is not None else _real_clock
    if speedups is not None:
        speedups.set_clock(now_ns)


_real_clock = now_ns


#: Set on every function wrapper tracebridge makes: ``instrument()`` leaves such a function alone.
MARK = "__tracebridge_instrumented__"
#: Methods that ``type`` makes class or static methods of implicitly, when they are plain functions: the
#: compiled wrapper is not one, so these keep a Python wrapper.
_IMPLICIT = frozenset({"__new__", "__init_subclass__", "__class_getitem__"})
#: The compiled wrapper calls the function from C: on Python 3.12 each level of recursion through it
#: counts against the C recursion limit, which setrecursionlimit does not raise (a recursion about 750
#: deep fails). 3.12 keeps the Python wrapper.
_C_CALLS_OK = sys.version_info[:2] != (3, 12)


def decorate(fn: F, name: NameOrFactory, level: int, metadata: dict[str, Any]) -> F:
    """``fn`` wrapped so that each call is a span (marked with :data:`MARK`)."""
    wrapper = _decorate(fn, name, level, metadata)
    with contextlib.suppress(AttributeError, TypeError):  # (a wrapper that takes no attributes)
        setattr(wrapper, MARK, True)
    return wrapper


def _decorate(fn: F, name: NameOrFactory, level: int, metadata: dict[str, Any]) -> F:
    if isinstance(fn, (classmethod, staticmethod)):  # above @classmethod / @staticmethod: inside them
        return type(fn)(decorate(fn.__func__, name, level, metadata))
    md = metadata or None

    def new_span() -> Span | _OffSpan:
        return _new_span(name, level, dict(md) if md else None)

    if inspect.iscoroutinefunction(fn):

        @wrapper_frame
        @functools.wraps(fn)
        async def coroutine_wrapper(*args: Any, **kwargs: Any) -> Any:
            if level > RT.level:
                return await fn(*args, **kwargs)
            with new_span():
                return await fn(*args, **kwargs)

        return coroutine_wrapper  # type: ignore[return-value]

    if inspect.isasyncgenfunction(fn):

        @wrapper_frame
        @functools.wraps(fn)
        async def async_generator_wrapper(*args: Any, **kwargs: Any) -> Any:
            agen = fn(*args, **kwargs)
            with span(name, level, **metadata):
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
                while True:
                    try:
                        sent = yield item
                    except GeneratorExit:
                        await agen.aclose()
                        raise
                    except BaseException as exc:
                        try:
                            item = await agen.athrow(exc)
                        except StopAsyncIteration:
                            return
                    else:
                        try:
                            item = await agen.asend(sent)
                        except StopAsyncIteration:
                            return

        return async_generator_wrapper  # type: ignore[return-value]

    if inspect.isgeneratorfunction(fn):

        @wrapper_frame
        @functools.wraps(fn)
        def generator_wrapper(*args: Any, **kwargs: Any) -> Any:
            with span(name, level, **metadata):
                return (yield from fn(*args, **kwargs))

        return generator_wrapper  # type: ignore[return-value]

    if (
        md is None
        and speedups is not None
        and _C_CALLS_OK
        and type(level) is int
        and getattr(fn, "__name__", None) not in _IMPLICIT
    ):  # the common case, compiled: `with span(name, level)` per call, with no frame of its own
        return functools.update_wrapper(speedups.Traced(fn, name, level), fn)  # type: ignore[return-value]

    if md is None:  # the common case, inlined: no metadata to copy per call
        lazy = None if type(name) is str else True

        @wrapper_frame
        @functools.wraps(fn)
        def plain_wrapper(*args: Any, **kwargs: Any) -> Any:
            if level > RT.level:
                return fn(*args, **kwargs)
            pipe = RT.pipeline
            if pipe is not None or lazy is not None:
                with _new_span(name, level, None):
                    return fn(*args, **kwargs)
            # The hottest path (auto-instrumented and @traced calls, no sampling): Span's __enter__ and
            # __exit__ inlined for a call that returns; anything unusual goes through __exit__.
            s = _new(Span)
            s.name = name
            s.level = level
            s.metadata = None
            s.error = None
            s.overlapping = False
            s.adjusted_count = 1.0
            s._lazy = None
            s._trace_id = s._span_id = 0
            stack = None
            try:  # (in the order of _PyScope.__enter__: current last, undone if interrupted)
                s.parent = parent = _current.get()
                try:
                    st = thread_local.state
                except AttributeError:
                    st = thread_state()
                stack = st.stack
                if stack and stack[-1] is not parent:
                    stack = s._place(st, parent)
                s._stack = stack
                s.start_ns = now_ns()
                stack.append(s)
                token = _current.set(s)
            except BaseException:
                s._undo_enter(stack)
                raise
            s._st = st
            s._token = token
            try:
                result = fn(*args, **kwargs)
                end = now_ns()
            except BaseException as exc:
                s.__exit__(type(exc), exc, exc.__traceback__)
                raise
            if s._st is None:  # stopped inside (current_span().stop())
                return result
            s._st = None
            s.end_ns = end
            try:  # (as _PyScope.__exit__: an interrupt still leaves the stack and the current span right)
                if stack and stack[-1] is s:
                    stack.pop()
                else:
                    try:  # noqa: SIM105  (off the stack in one C call, as in _PyScope.__exit__)
                        stack.remove(s)
                    except ValueError:
                        pass
                    s._left_out_of_order(stack)
            finally:
                s._token = None  # type: ignore[assignment]
                resets = True
                try:  # (as __exit__ handles it)
                    cur = _current.get()
                    resets = cur is s or (cur is not None and cur._token is None)
                finally:
                    if resets:
                        try:
                            _current.reset(token)
                            if parent is not None and parent._token is None:
                                _skip_ended(parent)
                        except ValueError:  # (a context switch the call made)
                            _current.set(s.parent if isinstance(s.parent, Span) else None)
            rec: Any = s
            if s._lazy is not None:  # the call added lazy metadata to its span
                s._resolve()
            elif s.metadata is not None:  # or metadata to snapshot
                if needs_snapshot(s.metadata):
                    s._snapshot()
            elif RT.compact and s.error is None and not s.overlapping and not s._trace_id:
                rec = (name, level, s.start_ns, end)  # (see _recorder.runtime.CompactSpan)
            if st.dead:
                st = thread_state()
            buf = st.buf
            if len(buf) < RT.buffer_soft:
                buf.append(rec)
            else:
                st.crowded(rec)
            return result

        return plain_wrapper  # type: ignore[return-value]

    @wrapper_frame
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if level > RT.level:
            return fn(*args, **kwargs)
        with new_span():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@overload
def traced(fn: F) -> F: ...
@overload
def traced(*, name: NameOrFactory | None = None, level: int = 1, **metadata: Any) -> Callable[[F], F]: ...


def traced(fn: Any = None, *, name: NameOrFactory | None = None, level: int = 1, **metadata: Any) -> Any:
    """Decorate a function (plain, coroutine, generator or async generator) so that each call is a
    span named after its qualified name: ``@traced`` or ``@traced(level=2)``.

    .. versionadded:: 0.1
    """

    def apply(f: F) -> F:
        inner = f.__func__ if isinstance(f, (classmethod, staticmethod)) else f
        if not callable(inner):
            raise TypeError(f"traced() decorates functions, got {f!r}")
        return decorate(f, name if name is not None else inner.__qualname__, level, metadata)

    if fn is None:
        return apply
    return apply(fn)
