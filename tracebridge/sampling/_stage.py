"""What every stage shares: the decision protocol and counting.

A stage looks at one event and returns the probability with which it keeps it: ``0.0`` drops the event,
``1.0`` keeps it unweighted, ``p`` between keeps it as a sample that stands for ``1/p`` events (its
adjusted count). Head stages look at spans when they begin and at instants, activities and log records
when they happen; tail stages look at spans when they end (see :class:`~tracebridge.sampling.Pipeline`).

The event a stage sees is the record the source made: it has ``kind``, ``name``, ``level``, ``metadata``
(or ``None``), ``trace_id`` (0 outside a trace), ``parent`` (the span current when it began, or
``None``) and, for spans at the tail, ``start_ns``, ``end_ns`` and ``error``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from .. import _safety

#: Kinds of events that pass through sampling (counter samples are metrics: they are never sampled).
SAMPLED_KINDS = ("span", "instant", "activity", "log")


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


class SampledEvent(Protocol):
    """What a stage sees: the record a source made (see the module's docstring). ``name`` may still be
    a callable (a lazy name) unless the stage says ``needs_name``; ``end_ns`` and ``error`` are known to
    tail stages only; ``parent`` is the span current when the event began (``None`` at a root)."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> Any: ...
    @property
    def level(self) -> int: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...
    @property
    def trace_id(self) -> int: ...
    @property
    def parent(self) -> Any: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int | None: ...
    @property
    def error(self) -> Any: ...


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

    def decide(self, ev: SampledEvent) -> float:  # pragma: no cover - every stage overrides it
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
        """In a forked child: make anew what another thread of the parent may have held. The default
        renews a ``threading.Lock`` kept as ``_lock`` (custom stages included); stages that wrap others
        pass it on."""
        if isinstance(getattr(self, "_lock", None), type(threading.Lock())):
            self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def event_name(ev: SampledEvent) -> str:
    name = ev.name
    return name if type(name) is str else _safety.safe_str(name)


def event_categories(ev: SampledEvent) -> tuple[str, ...]:
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
