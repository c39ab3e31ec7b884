"""Filters: keep or drop events by level, name, category, duration, a predicate, or per-prefix levels."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from .._globs import GlobTable, compile_globs
from .._units import parse_duration
from ._stage import SampledEvent, Stage, event_categories, event_name

ENV_FILTER = "TRACEBRIDGE_FILTER"


def _check_level(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"{what} must be a level (an integer >= 0; 1 critical, 2 info, 3+ verbose), got {value!r}"
        )
    return value


class Level(Stage):
    """Keeps events of level ``n`` and below.

    .. versionadded:: 0.1
    """

    weighted = False

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = _check_level(n, "Level(n)")

    def decide(self, ev: SampledEvent) -> float:
        return 1.0 if ev.level <= self.n else 0.0

    def __repr__(self) -> str:
        return f"Level({self.n})"


class Names(Stage):
    """Keeps events whose name matches one of the ``include`` globs (all, if none are given) and none of
    the ``exclude`` globs.

    .. versionadded:: 0.1
    """

    weighted = False
    needs_name = True

    def __init__(
        self, include: Iterable[str] | str | None = None, exclude: Iterable[str] | str | None = None
    ) -> None:
        super().__init__()
        if include is None and exclude is None:
            raise ValueError("Names: give include=, exclude= or both")
        self._include = None if include is None else compile_globs(include, "Names(include)")
        self._exclude = None if exclude is None else compile_globs(exclude, "Names(exclude)")
        self.include = include
        self.exclude = exclude

    def decide(self, ev: SampledEvent) -> float:
        name = event_name(ev)
        if self._include is not None and not self._include.match(name):
            return 0.0
        if self._exclude is not None and self._exclude.match(name):
            return 0.0
        return 1.0

    def __repr__(self) -> str:
        return f"Names(include={self.include!r}, exclude={self.exclude!r})"


class Categories(Stage):
    """Drops events in any ``disabled`` category; with ``enabled``, keeps only events in one of them
    (events without a category are kept unless ``enabled`` is given).

    .. versionadded:: 0.1
    """

    weighted = False

    def __init__(self, disabled: Iterable[str] = (), enabled: Iterable[str] | None = None) -> None:
        super().__init__()
        self.disabled = _names(disabled, "Categories(disabled)")
        self.enabled = None if enabled is None else _names(enabled, "Categories(enabled)")

    def decide(self, ev: SampledEvent) -> float:
        cats = event_categories(ev)
        if any(c in self.disabled for c in cats):
            return 0.0
        if self.enabled is not None and not any(c in self.enabled for c in cats):
            return 0.0
        return 1.0

    def __repr__(self) -> str:
        return f"Categories(disabled={sorted(self.disabled)!r})"


def _names(values: Iterable[str], what: str) -> frozenset[str]:
    if isinstance(values, str):
        values = [values]
    out = set()
    for v in values:
        if not isinstance(v, str) or not v:
            raise ValueError(f"{what}: expected non-empty category names, got {v!r}")
        out.add(v)
    return frozenset(out)


class MinDuration(Stage):
    """Drops spans shorter than a threshold: one for all (``MinDuration("100us")``) or per operation
    name glob, first match wins (``MinDuration({"memory_allocation*": "1ms", "*": "100ms"})``).
    Decides when spans end; events without a duration are kept.

    .. versionadded:: 0.1
    """

    weighted = False
    tail = True

    def __init__(self, threshold: Any) -> None:
        super().__init__()
        if isinstance(threshold, dict):
            table = {k: parse_duration(v, f"MinDuration[{k!r}]") for k, v in threshold.items()}
            self._table: GlobTable | None = GlobTable(table, "MinDuration", 0)
            self._ns = 0
        else:
            self._table = None
            self._ns = parse_duration(threshold, "MinDuration(threshold)")
        self.threshold = threshold

    def threshold_ns(self, name: str) -> int:
        return self._ns if self._table is None else int(self._table.lookup(name))

    def decide(self, ev: SampledEvent) -> float:
        end = getattr(ev, "end_ns", None)
        if end is None or ev.kind not in ("span", "activity"):
            return 1.0
        limit = self._ns if self._table is None else self._table.lookup(event_name(ev))
        return 1.0 if end - ev.start_ns >= limit else 0.0

    def __repr__(self) -> str:
        return f"MinDuration({self.threshold!r})"


class Predicate(Stage):
    """Keeps events for which ``fn(event)`` is true. ``at="tail"`` decides spans when they end (the
    event then has ``end_ns`` and ``error``). A predicate that raises keeps the event; the error is
    counted, and raised in strict mode.

    .. versionadded:: 0.1
    """

    weighted = False

    def __init__(self, fn: Callable[[Any], Any], at: Literal["head", "tail"] = "head") -> None:
        super().__init__()
        if not callable(fn):
            raise ValueError(f"Predicate(fn) must be callable, got {fn!r}")
        if at not in ("head", "tail"):
            raise ValueError(f"Predicate(at) must be 'head' or 'tail', got {at!r}")
        self.fn = fn
        self.tail = at == "tail"  # type: ignore[misc]

    def decide(self, ev: SampledEvent) -> float:
        try:
            return 1.0 if self.fn(ev) else 0.0
        except Exception as exc:
            self.record_error("predicate", exc)
            return 1.0

    def __repr__(self) -> str:
        return f"Predicate({getattr(self.fn, '__name__', self.fn)!r})"


_DIRECTIVE = re.compile(r"\s*(?:([A-Za-z_*][\w.*-]*)\s*=\s*)?([0-9]+|off|critical|info|verbose)\s*")
_LEVEL_NAMES = {"off": 0, "critical": 1, "info": 2, "verbose": 3}


class Directives(Stage):
    """Levels by name prefix, like ``RUST_LOG``: ``Directives("myapp.db=3,myapp=2,*=1")`` keeps events
    of ``myapp.db...`` up to level 3, other ``myapp...`` events up to level 2, and the rest up to level 1.
    The longest matching prefix wins (prefixes match whole dotted components); ``*`` or a bare level sets
    the default. Levels may be written ``off``, ``critical``, ``info``, ``verbose``. Log records are matched
    by their logger's name (metadata ``logger``), other events by their name.

    :meth:`from_env` reads the same syntax from ``TRACEBRIDGE_FILTER``.

    .. versionadded:: 0.1
    """

    weighted = False
    needs_name = True

    def __init__(self, spec: str) -> None:
        super().__init__()
        if not isinstance(spec, str):
            raise ValueError(f"Directives(spec) must be a string like 'myapp.db=3,*=1', got {spec!r}")
        self.spec = spec
        self.default: int | None = None
        self.prefixes: dict[str, int] = {}
        for part in spec.split(","):
            if not part.strip():
                continue
            m = _DIRECTIVE.fullmatch(part)
            if m is None:
                raise ValueError(
                    f"Directives: cannot read {part.strip()!r} in {spec!r}; "
                    "expected 'prefix=level' or 'level'"
                )
            prefix, level_text = m.groups()
            level = _LEVEL_NAMES[level_text] if level_text in _LEVEL_NAMES else int(level_text)
            if prefix is None or prefix == "*":
                self.default = level
            elif "*" in prefix:
                raise ValueError(
                    f"Directives: {prefix!r} in {spec!r}: prefixes are names, not globs (only '*' alone)"
                )
            else:
                self.prefixes[prefix] = level
        if self.default is None and not self.prefixes:
            raise ValueError(f"Directives: no directive in {spec!r}")
        self._cache: dict[str, int | None] = {}

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Directives | None:
        """The directives in ``TRACEBRIDGE_FILTER``, or ``None`` when it is unset or empty."""
        value = (os.environ if environ is None else environ).get(ENV_FILTER, "").strip()
        if not value:
            return None
        try:
            return cls(value)
        except ValueError as exc:
            raise ValueError(f"{ENV_FILTER}: {exc}") from None

    def level_for(self, name: str) -> int | None:
        """The level directives allow for ``name`` (``None``: no directive applies, the event is kept)."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        level = self.default
        best = -1
        for prefix, lvl in self.prefixes.items():
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, level = len(prefix), lvl
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[name] = level
        return level

    def decide(self, ev: SampledEvent) -> float:
        md = ev.metadata
        name = md.get("logger") if md and ev.kind == "log" and "logger" in md else None
        limit = self.level_for(name if isinstance(name, str) else event_name(ev))
        return 1.0 if limit is None or ev.level <= limit else 0.0

    def __repr__(self) -> str:
        return f"Directives({self.spec!r})"
