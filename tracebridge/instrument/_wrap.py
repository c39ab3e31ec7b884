"""Wrapping what a module defines: functions, and the methods of its classes (nested classes too), each
kind in the way that keeps it what it was."""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .._model import CODE_LOCATIONS
from ..spans import _decorate

#: Set on every wrapper: a callable that has it is not wrapped again.
MARK = "__tracebridge_instrumented__"
#: Dunder methods worth a span (the others are called implicitly and often: repr, eq, hash, ...).
_DUNDERS = frozenset({"__init__", "__call__", "__enter__", "__exit__", "__aenter__", "__aexit__"})


@dataclass
class Options:
    level: int
    include_private: bool


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


def wrap_function(fn: Any, module: str, level: int) -> Callable[..., Any]:
    """A span per call of ``fn``, named ``module.qualname``; its ``code.filepath``, ``code.lineno`` and
    ``code.function`` are added by the writer (:data:`CODE_LOCATIONS`), not carried by every call."""
    code = fn.__code__
    name = f"{module}.{fn.__qualname__}"
    CODE_LOCATIONS[name] = (code.co_filename, code.co_firstlineno, fn.__qualname__)
    wrapper: Callable[..., Any] = _decorate(fn, name, level, {})
    setattr(wrapper, MARK, True)
    return wrapper


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
            _replace(module, attr, value, wrap_function(value, name, opts.level), result)
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
                new = staticmethod(wrap_function(value.__func__, module, opts.level))
        elif isinstance(value, classmethod):
            if _is_ours(value.__func__, module):
                new = classmethod(wrap_function(value.__func__, module, opts.level))
        elif isinstance(value, property):
            parts: list[Any] = [value.fget, value.fset, value.fdel]
            if any(_is_ours(p, module) for p in parts):
                wrapped = [wrap_function(p, module, opts.level) if _is_ours(p, module) else p for p in parts]
                make: Any = type(value)
                new = make(*wrapped, value.__doc__)
        elif _is_ours(value, module):
            new = wrap_function(value, module, opts.level)
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
