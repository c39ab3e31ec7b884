"""What every stage shares: the decision protocol, counting, name globs, and trace randomness.

A stage looks at one event and returns the probability with which it keeps it: ``0.0`` drops the event,
``1.0`` keeps it unweighted, ``p`` between keeps it as a sample that stands for ``1/p`` events (its
adjusted count). Head stages look at spans when they begin and at instants, activities and log records
when they happen; tail stages look at spans when they end (see :class:`~tracebridge.sampling.Pipeline`).

The event a stage sees is the record the source made: it has ``kind``, ``name``, ``level``, ``metadata``
(or ``None``), ``trace_id`` (0 outside a trace), ``parent`` (the span current when it began, or
``None``) and, for spans at the tail, ``start_ns``, ``end_ns`` and ``error``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import math
import random
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar

from .. import _safety

#: Kinds of events that pass through sampling (counter samples are metrics: they are never sampled).
SAMPLED_KINDS = ("span", "instant", "activity", "log")
RANDOMNESS_BITS = 56
RANDOMNESS_MASK = (1 << RANDOMNESS_BITS) - 1


class Tally:
    """A count that many threads bump at once, without a lock: ``add()`` counts one more; ``value``
    reads it. It is an ``itertools.count``, whose ``next()`` is a single operation under the GIL and the
    cheapest increment Python has: hot paths keep ``counter`` and call ``next(counter)`` themselves."""

    __slots__ = ("add", "counter")

    def __init__(self) -> None:
        self.counter = itertools.count()
        self.add: Callable[[], int] = self.counter.__next__

    @property
    def value(self) -> int:
        # An itertools.count shows the next value it would give in its repr, "count(N)" (its pickling
        # support, the other way to read it, is deprecated since Python 3.12).
        return int(repr(self.counter)[6:-1])

    def __repr__(self) -> str:
        return f"Tally({self.value})"


class Stage:
    """Base class of the pipeline's stages. Subclasses implement :meth:`decide` and set ``reason``.

    Counting is exact under many threads: ``next()`` on an ``itertools.count`` is a single operation.
    """

    #: The drop reason this stage's drops are counted under in ``Session.stats.dropped``.
    reason: ClassVar[str] = "filtered"
    #: True for stages that decide when a span ends (they see durations and failures).
    tail: ClassVar[bool] = False
    #: True for stages that read the event's name (a lazy name is then resolved before they run).
    needs_name: ClassVar[bool] = False
    #: For stages whose decision on a root event depends on its trace randomness alone: the OTEP 235
    #: threshold it applies (the pipeline then decides roots without calling the stage).
    root_threshold: int | None = None
    #: True for stages whose probabilities come from comparing the trace's randomness with a threshold
    #: (OTEP 235): their decisions nest, so several of them keep an event with the lowest of their
    #: probabilities, not with the product.
    consistent: bool = False
    #: False for stages that only keep (1.0) or drop (0.0): filters and rate limiters.
    weighted: ClassVar[bool] = True

    def __init__(self) -> None:
        #: What the stage kept and dropped so far, by kind; its guarded calls that failed.
        self.kept_by_kind = {kind: Tally() for kind in SAMPLED_KINDS}
        self.dropped_by_kind = {kind: Tally() for kind in SAMPLED_KINDS}
        self.error_count = Tally()

    def decide(self, ev: Any) -> float:  # pragma: no cover - every stage overrides it
        raise NotImplementedError

    def counts(self) -> dict[str, dict[str, int]]:
        """Events this stage kept and dropped so far, by kind."""
        return {
            "kept": {k: c.value for k, c in self.kept_by_kind.items() if c.value},
            "dropped": {k: c.value for k, c in self.dropped_by_kind.items() if c.value},
        }

    def record_error(self, what: str, exc: Exception) -> None:
        """Count and report an error of the stage's own or a user's code (``what`` names it); raised
        in strict mode."""
        self.error_count.add()
        _safety.internal_error(f"sampling.{type(self).__name__}.{what}", exc)

    def after_fork(self) -> None:
        """In a forked child: make anew what another thread of the parent may have held (locks)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ------------------------------------------------------------------------------------------------ globs


def compile_globs(patterns: Iterable[str] | str, what: str) -> re.Pattern[str]:
    """One regular expression matching any of the glob ``patterns`` (``*``, ``?``, ``[...]``).

    Raises ``ValueError`` naming ``what`` for a pattern that is not a non-empty string or that can never
    match anything.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    parts = []
    for p in patterns:
        if not isinstance(p, str) or not p:
            raise ValueError(f"{what}: expected non-empty glob strings, got {p!r}")
        regex = fnmatch.translate(p)
        if not re.fullmatch(regex, _witness(p), re.DOTALL):
            raise ValueError(f"{what}: the glob {p!r} can never match anything")
        parts.append(f"(?:{regex})")
    return re.compile("|".join(parts) if parts else r"(?!)", re.DOTALL)


def _witness(glob: str) -> str:
    """A string the glob should match, built the way fnmatch reads it; a glob that does not match its
    own witness has an empty character class (it can never match)."""
    out = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            continue
        if c == "?":
            out.append("x")
        elif c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:  # no closing bracket: fnmatch reads '[' as itself
                out.append("[")
                continue
            body = glob[i:j]
            i = j + 1
            negated = body.startswith("!")
            chars = body[1:] if negated else body
            allowed = _class_chars(chars)
            if negated:
                out.append(next((ch for ch in "xyz_0aA~" if ch not in allowed), "\x00"))
            else:
                out.append(min(allowed) if allowed else "\x00")
        else:
            out.append(c)
    return "".join(out)


def _class_chars(body: str) -> set[str]:
    chars: set[str] = set()
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            lo, hi = body[i], body[i + 2]
            if lo <= hi:
                chars.update(chr(c) for c in range(ord(lo), min(ord(hi), ord(lo) + 255) + 1))
            i += 3
        else:
            chars.add(body[i])
            i += 1
    return chars


class GlobTable:
    """Values by name glob, first match wins (a mapping's order), with a bounded cache of lookups."""

    def __init__(self, mapping: dict[str, Any], what: str, default: Any = None) -> None:
        if not isinstance(mapping, dict):
            raise ValueError(f"{what}: expected a mapping of name globs to values, got {mapping!r}")
        self.rules = [(compile_globs(k, what), v) for k, v in mapping.items()]
        self.default = default
        self._cache: dict[str, Any] = {}

    def lookup(self, name: str) -> Any:
        try:
            return self._cache[name]
        except KeyError:
            pass
        value = next((v for regex, v in self.rules if regex.match(name)), self.default)
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[name] = value
        return value


# ------------------------------------------------------------------------------ consistent probability


def threshold(probability: float, precision: int = 5) -> int:
    """The OTEP 235 rejection threshold for ``probability``: ``T = 2^56 - round(p * 2^56)``, rounded to
    ``precision`` hex digits (more for small probabilities, as the specification's encoder does: 1%
    gives ``fd70a4``). An event with randomness ``R`` is kept iff ``R >= T``."""
    if probability >= 1:
        return 0
    exact = (1 << 56) - round(probability * (1 << 56))
    _, exponent = math.frexp(probability)
    digits = max(1, min(14, precision + exponent // -4))
    unit = 1 << (4 * (14 - digits))
    rounded = (exact + unit // 2) // unit * unit
    return min(rounded, (1 << 56) - 1)


def threshold_to_th(t: int) -> str:
    """The ``th`` value of OpenTelemetry's tracestate for threshold ``t`` (``"0"`` keeps everything)."""
    if t == 0:
        return "0"
    return f"{t:014x}".rstrip("0")


def th_to_threshold(th: str) -> int:
    """Threshold from a ``th`` value (1 to 14 hex digits, padded with trailing zeros)."""
    if not 1 <= len(th) <= 14 or any(c not in "0123456789abcdef" for c in th):
        raise ValueError(f"th: expected 1 to 14 lowercase hex digits, got {th!r}")
    return int(th.ljust(14, "0"), 16)


def keep_probability(t: int) -> float:
    """The probability a threshold keeps: ``(2^56 - T) / 2^56``."""
    return ((1 << 56) - t) / (1 << 56)


def randomness(ev: Any) -> int:
    """The 56 random bits a consistent decision uses: the low 56 bits of the event's trace id (W3C
    Trace Context Level 2), or fresh random bits for an event outside any trace."""
    trace_id = ev.trace_id
    if trace_id:
        return int(trace_id) & RANDOMNESS_MASK
    return random.getrandbits(RANDOMNESS_BITS)


def event_name(ev: Any) -> str:
    name = ev.name
    return name if type(name) is str else _safety.safe_str(name)


def event_categories(ev: Any) -> tuple[str, ...]:
    md = ev.metadata
    if not md or "category" not in md:
        return ()
    value = md["category"]
    if isinstance(value, str):
        return (value,)
    try:
        return tuple(str(v) for v in value)
    except TypeError:
        return (str(value),)


@contextlib.contextmanager
def errors_named(public: str, internal: str) -> Iterator[None]:
    """Setup errors of a stage that a public class builds for the user, named after that class (the user
    wrote ``RateLimitFilter(per_second=0)``, not ``KeyedRateLimiter(...)``)."""
    try:
        yield
    except ValueError as exc:
        text = str(exc)
        raise ValueError(
            public + text[len(internal) :] if text.startswith(internal) else f"{public}: {text}"
        ) from None
