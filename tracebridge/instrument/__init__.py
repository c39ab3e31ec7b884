"""Auto-instrumentation: a span for every call into the modules you name, without editing them.

::

    handle = tracebridge.instrument(["myapp", "myapp.db.*"], exclude=["myapp.vendored.*"])
    ...
    handle.uninstrument()

Modules already imported are instrumented at once; modules imported later, as they are imported (through
wrapt's post-import hooks). What a module defines is wrapped: its functions, and the methods of its
classes (nested classes too), each kind so that it stays what it was: coroutine functions (the span
covers the await), generators and async generators (the span covers the iteration), classmethods,
staticmethods and properties. ``inspect.signature``, ``__name__``, ``__qualname__``, ``__doc__``,
``__wrapped__``, ``inspect.iscoroutinefunction`` and pickling by reference stay as they were. Spans are
named ``module.qualname`` and carry ``code.filepath`` and ``code.lineno``. Instrumenting twice never
wraps twice.
"""

from __future__ import annotations

import fnmatch
import importlib.abc
import re
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from typing import Any

import wrapt

from .. import _hooks, _safety
from .._units import parse_duration
from ._budget import new_generation
from ._wrap import DEMOTE_AFTER, Options, Result, instrument_module, undo

__all__ = ["DEMOTE_AFTER", "Instrumentation", "instrument"]

#: Never instrumented, whatever the patterns say: tracebridge itself and what it runs on.
_NEVER = ("tracebridge", "wrapt", "opentelemetry", "structlog", "google.protobuf", "importlib", "encodings")

_lock = threading.RLock()
_active: list[Instrumentation] = []
_hooked: set[str] = set()  # module names with a wrapt post-import hook
_finder: _Finder | None = None


def _matcher(patterns: Iterable[str], what: str) -> re.Pattern[str] | None:
    parts = []
    for p in patterns:
        if not isinstance(p, str) or not p or p.strip() != p:
            raise ValueError(f"instrument({what}): expected module names or globs, got {p!r}")
        if any(c in p for c in "*?["):
            parts.append(fnmatch.translate(p))
            if p.endswith(".*"):  # "pkg.*": the package too, not only what is under it
                parts.append(fnmatch.translate(p[:-2]))
        else:  # a module and everything under it
            parts.append(re.escape(p) + r"(?:\..*)?\Z")
    return re.compile("|".join(f"(?:{x})" for x in parts)) if parts else None


def _never(name: str) -> bool:
    return any(name == n or name.startswith(n + ".") for n in _NEVER)


class Instrumentation:
    """What :func:`instrument` did: the modules it instrumented, the callables it wrapped and the ones
    it skipped; :meth:`uninstrument` undoes it.

    .. versionadded:: 0.1
    """

    def __init__(self, include: re.Pattern[str], exclude: re.Pattern[str] | None, opts: Options) -> None:
        self._include = include
        self._exclude = exclude
        self.options = opts
        self.modules: list[str] = []
        self.result = Result()
        self.active = True
        self.arguments: tuple[list[str], list[str], dict[str, Any]] = ([], [], {})

    def matches(self, name: str) -> bool:
        if _never(name) or not self._include.match(name):
            return False
        return self._exclude is None or not self._exclude.match(name)

    @property
    def wrapped(self) -> int:
        """How many callables are wrapped."""
        return len(self.result.patches)

    @property
    def skipped(self) -> dict[str, int]:
        """Callables left alone, by reason (``builtin``, ``read-only``)."""
        return dict(self.result.skipped)

    def _apply(self, module: types.ModuleType) -> None:
        if module.__name__ in self.modules:
            return
        self.modules.append(module.__name__)
        try:
            instrument_module(module, self.options, self.result)
        except Exception as exc:  # a module that cannot be walked: left as it is, reported
            _safety.internal_error(f"instrument {module.__name__}", exc)

    def uninstrument(self) -> None:
        """Put every wrapped callable back, and stop instrumenting modules imported from now on."""
        with _lock:
            if not self.active:
                return
            self.active = False
            _active.remove(self)
            undo(self.result.patches)
            self.result.patches.clear()

    def __repr__(self) -> str:
        state = "active" if self.active else "undone"
        return f"<tracebridge.Instrumentation {len(self.modules)} modules, {self.wrapped} callables, {state}>"


class _Finder(importlib.abc.MetaPathFinder):
    """Sees every import first and, for a module some instrumentation wants, registers a wrapt
    post-import hook for it; the import itself goes on as usual (this finder finds nothing)."""

    def find_spec(self, fullname: str, path: Sequence[str] | None = None, target: Any = None) -> None:
        if fullname not in _hooked and any(i.matches(fullname) for i in list(_active)):
            _hooked.add(fullname)
            wrapt.register_post_import_hook(_imported, fullname)
        return None


def _imported(module: types.ModuleType) -> None:
    with _lock:
        for inst in list(_active):
            if inst.matches(module.__name__):
                inst._apply(module)


def _install_finder() -> None:
    global _finder
    if _finder is None:
        # wrapt puts its own finder first in sys.meta_path when the first hook is registered; ours must
        # come before it, so that it registers hooks before wrapt's finder looks for them.
        wrapt.register_post_import_hook(lambda module: None, "tracebridge.instrument._never_imported")
        _finder = _Finder()
    if _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    sys.meta_path.insert(0, _finder)


def instrument(
    patterns: str | Iterable[str],
    exclude: str | Iterable[str] = (),
    *,
    level: int = 2,
    min_duration: str | float | None = None,
    include_private: bool = False,
    capture_args: bool = False,
) -> Instrumentation:
    """Instrument the modules named by ``patterns`` (module names, each with everything under it, or
    globs such as ``"myapp.*_views"``; ``"pkg.*"`` is the package and everything under it), except those
    of ``exclude`` (the same forms): every call of a function or method they define is a span of
    ``level``. Private names (``_name``) only with ``include_private``.

    ``min_duration`` (``"100us"``, or seconds): calls shorter than it are not recorded, and cost two clock
    reads; a function called 1000 times, always under it, is demoted to a path that costs one flag test
    (``Stats.demoted`` and ``tracebridge summary`` list them) until the next session or ``instrument``
    call. (Generators and async generators are always recorded.) ``capture_args``: spans carry the
    call's arguments (``args``) and return value (``return``), sanitized, scrubbed and bounded; the
    arguments are copied as each call begins, so it records every call and does not go with
    ``min_duration``.

    .. versionadded:: 0.1
    """
    include = _matcher([patterns] if isinstance(patterns, str) else list(patterns), "patterns")
    if include is None:
        raise ValueError("instrument(patterns): name at least one module")
    excluded = _matcher([exclude] if isinstance(exclude, str) else list(exclude), "exclude")
    if isinstance(level, bool) or not isinstance(level, int) or level < 1:
        raise ValueError(f"instrument(level) must be an integer >= 1, got {level!r}")
    min_ns = None if min_duration is None else parse_duration(min_duration, "instrument(min_duration)")
    if min_ns is not None and capture_args:
        raise ValueError(
            "instrument(capture_args=True) copies the arguments as every call begins, so it records every "
            "call: it cannot be combined with min_duration"
        )
    inst = Instrumentation(
        include, excluded, Options(level, bool(include_private), min_ns, bool(capture_args))
    )
    #: What a spawned child process calls instrument() with to instrument as this process does.
    inst.arguments = (
        [patterns] if isinstance(patterns, str) else list(patterns),
        [exclude] if isinstance(exclude, str) else list(exclude),
        {
            "level": level,
            "min_duration": min_duration,
            "include_private": bool(include_private),
            "capture_args": bool(capture_args),
        },
    )
    new_generation()
    with _lock:
        _active.append(inst)
        _install_finder()
        for name, module in list(sys.modules.items()):
            if isinstance(module, types.ModuleType) and inst.matches(name):
                inst._apply(module)
    return inst


def _active_arguments() -> list[tuple[list[str], list[str], dict[str, Any]]]:
    with _lock:
        return [inst.arguments for inst in _active if inst.active]


def _instrument_as_parent(arguments: list[tuple[list[str], list[str], dict[str, Any]]]) -> None:
    for patterns, exclude, options in arguments:
        instrument(patterns, exclude, **options)


# A spawned child process instruments the modules its parent instrumented (see _recorder/children.py).
_hooks.child_state[__name__] = (_active_arguments, _instrument_as_parent)
