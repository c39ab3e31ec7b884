"""Wrapping what a module defines: functions, and the methods of its classes (nested classes too), each
kind in the way that keeps it what it was."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _safety
from .._backtrace import error_info, is_failure, wrapper_frame
from .._intake import snapshot_metadata
from .._model import CODE_LOCATIONS, SpanRecord
from .._recorder.runtime import RT, now_ns, thread_state
from ..spans import MARK, Span, current_span, decorate, span
from ._budget import demotions, generation

#: Dunder methods worth a span (the others are called implicitly and often: repr, eq, hash, ...).
_DUNDERS = frozenset({"__init__", "__call__", "__enter__", "__exit__", "__aenter__", "__aexit__"})


@dataclass
class Options:
    level: int
    include_private: bool
    min_duration_ns: int | None = None
    capture_args: bool = False


@dataclass
class Patch:
    """One attribute replaced: ``setattr(owner, name, original)`` undoes it."""

    owner: Any
    name: str
    original: Any
    wrapped: Any


@dataclass
class Result:
    patches: list[Patch] = field(default_factory=list)
    #: Callables found but left alone (C functions, objects that refuse a new attribute), by kind.
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def wrap_function(fn: Any, module: str, opts: Options) -> Callable[..., Any]:
    """A span per call of ``fn``, named ``module.qualname``; its ``code.filepath``, ``code.lineno`` and
    ``code.function`` are added by the writer (:data:`CODE_LOCATIONS`), not carried by every call."""
    code = fn.__code__
    name = f"{module}.{fn.__qualname__}"
    CODE_LOCATIONS[name] = (code.co_filename, code.co_firstlineno, fn.__qualname__)
    plain = not (inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn))
    wrapper: Callable[..., Any]
    if opts.capture_args:
        wrapper = _capturing(fn, name, opts.level)
    elif opts.min_duration_ns is not None and plain:
        wrapper = _timed(fn, name, opts.level, opts.min_duration_ns)
    else:
        wrapper = decorate(fn, name, opts.level, {})
    setattr(wrapper, MARK, True)
    return wrapper


#: Calls, all under min_duration, after which a function is demoted to the near-zero-cost path.
DEMOTE_AFTER = 1000


class _Budget:
    """A timed function's record: calls under and over its min_duration in this generation."""

    __slots__ = ("demoted", "generation", "long", "short")

    def __init__(self) -> None:
        self.generation = generation[0]
        self.short = self.long = 0
        self.demoted = False

    def renew(self) -> None:
        self.generation = generation[0]
        self.short = self.long = 0
        self.demoted = False


def _timed(fn: Any, name: str, level: int, min_ns: int) -> Callable[..., Any]:
    """Calls shorter than ``min_ns`` are not recorded; no span is open while the call runs (it is
    written, complete, when the call turns out long enough or fails), so a short call costs two clock
    reads. A function called :data:`DEMOTE_AFTER` times, always under ``min_ns``, is demoted: its calls
    then cost one flag test, until the next session or instrument() call."""
    budget = _Budget()

    def done(t0: int, exc: BaseException | None) -> None:
        t1 = now_ns()
        if t1 - t0 >= min_ns or exc is not None:
            budget.long += 1
            _record_call(name, level, t0, t1, exc, overlapping=False)
        else:
            budget.short += 1
            if budget.short >= DEMOTE_AFTER and budget.long == 0:
                budget.demoted = True
                demotions[name] = budget.short

    if inspect.iscoroutinefunction(fn):

        @wrapper_frame
        @functools.wraps(fn)
        async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
            if budget.demoted or level > RT.level:
                if budget.generation == generation[0] or level > RT.level:
                    return await fn(*args, **kwargs)
                budget.renew()
            elif budget.generation != generation[0]:
                budget.renew()
            t0 = now_ns()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                done(t0, exc)
                raise
            done(t0, None)
            return result

        return timed_coroutine

    @wrapper_frame
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        if budget.demoted or level > RT.level:
            if budget.generation == generation[0] or level > RT.level:
                return fn(*args, **kwargs)
            budget.renew()
        elif budget.generation != generation[0]:
            budget.renew()
        t0 = now_ns()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            done(t0, exc)
            raise
        done(t0, None)
        return result

    return timed


def _record_call(
    name: str, level: int, t0: int, t1: int, exc: BaseException | None, overlapping: bool
) -> None:
    """Queue a complete span for a call that has ended (it nests in time in whatever is open around it)."""
    try:
        parent = current_span()
        if parent is not None and not parent.sampled:
            return  # inside a trace that sampling dropped
        failed = exc is not None and is_failure(type(exc), exc)
        error = error_info(exc, exc.__traceback__) if failed and exc is not None else None
        if RT.compact and error is None and not overlapping:
            thread_state().push((name, level, t0, t1))  # (see _recorder.runtime.CompactSpan)
        else:
            thread_state().push(
                SpanRecord.of(name, level, t0, t1, parent=parent, error=error, overlapping=overlapping)
            )
        bridge = RT.bridge
        if bridge is not None:
            bridge.ended_call(name, t0, t1, exc)
    except Exception as err:
        _safety.internal_error("instrumented call", err)


def _capturing(fn: Any, name: str, level: int) -> Callable[..., Any]:
    """Spans with the call's arguments (and return value), sanitized, scrubbed and bounded when the call
    is made: the span's ``args`` (a mapping of parameter names) and ``return``."""
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None

    def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            if signature is not None:
                bound = signature.bind_partial(*args, **kwargs)
                values: dict[str, Any] = dict(bound.arguments)
            else:
                values = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
        except TypeError:  # the call itself is wrong: fn will say so
            values = {f"arg{i}": a for i, a in enumerate(args)} | kwargs
        return snapshot_metadata({"args": values})

    def finish(s: Any, result: Any) -> None:
        if isinstance(s, Span):
            s.set(**snapshot_metadata({"return": result}))

    if inspect.iscoroutinefunction(fn):

        @wrapper_frame
        @functools.wraps(fn)
        async def capturing_coroutine(*args: Any, **kwargs: Any) -> Any:
            if level > RT.level:
                return await fn(*args, **kwargs)
            with span(name, level) as s:
                if isinstance(s, Span):
                    s.set(**arguments(args, kwargs))
                result = await fn(*args, **kwargs)
                finish(s, result)
                return result

        return capturing_coroutine

    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        iteration: Callable[..., Any] = decorate(fn, name, level, {})  # (arguments are not kept for these)
        return iteration

    @wrapper_frame
    @functools.wraps(fn)
    def capturing(*args: Any, **kwargs: Any) -> Any:
        if level > RT.level:
            return fn(*args, **kwargs)
        with span(name, level) as s:
            if isinstance(s, Span):
                s.set(**arguments(args, kwargs))
            result = fn(*args, **kwargs)
            finish(s, result)
            return result

    return capturing


def _wanted(name: str, opts: Options) -> bool:
    if name.startswith("__") and name.endswith("__"):
        return name in _DUNDERS
    return opts.include_private or not name.startswith("_")


def _is_ours(fn: Any, module: str) -> bool:
    return isinstance(fn, types.FunctionType) and fn.__module__ == module and not getattr(fn, MARK, False)


def _replace(owner: Any, name: str, original: Any, new: Any, result: Result) -> None:
    try:
        setattr(owner, name, new)
    except (AttributeError, TypeError):
        result.skip("read-only")
        return
    result.patches.append(Patch(owner, name, original, new))


def instrument_module(module: types.ModuleType, opts: Options, result: Result) -> None:
    name = module.__name__
    for attr, value in list(vars(module).items()):
        if not _wanted(attr, opts):
            continue
        if _is_ours(value, name):
            _replace(module, attr, value, wrap_function(value, name, opts), result)
        elif isinstance(value, type) and value.__module__ == name and value.__qualname__ == attr:
            instrument_class(value, name, opts, result)
        elif isinstance(value, types.BuiltinFunctionType) and getattr(value, "__module__", None) == name:
            result.skip("builtin")


def instrument_class(cls: type, module: str, opts: Options, result: Result) -> None:
    for attr, value in list(vars(cls).items()):
        if not _wanted(attr, opts):
            continue
        new: Any = None
        if isinstance(value, staticmethod):
            if _is_ours(value.__func__, module):
                new = staticmethod(wrap_function(value.__func__, module, opts))
        elif isinstance(value, classmethod):
            if _is_ours(value.__func__, module):
                new = classmethod(wrap_function(value.__func__, module, opts))
        elif isinstance(value, property):
            parts: list[Any] = [value.fget, value.fset, value.fdel]
            if any(_is_ours(p, module) for p in parts):
                wrapped = [wrap_function(p, module, opts) if _is_ours(p, module) else p for p in parts]
                make: Any = type(value)
                new = make(*wrapped, value.__doc__)
        elif _is_ours(value, module):
            new = wrap_function(value, module, opts)
        elif isinstance(value, type) and value.__qualname__ == f"{cls.__qualname__}.{attr}":
            instrument_class(value, module, opts, result)  # a nested class
        elif isinstance(value, (types.BuiltinFunctionType, types.MethodDescriptorType)):
            result.skip("builtin")
        if new is not None:
            _replace(cls, attr, value, new, result)


def undo(patches: list[Patch]) -> None:
    """Put back what ``patches`` replaced (if nothing replaced it since)."""
    for p in reversed(patches):
        current = vars(p.owner).get(p.name)  # (a class's own attribute: no descriptor binding)
        if current is p.wrapped:
            setattr(p.owner, p.name, p.original)
