"""The pipeline: stages in order, head stages when an event begins, tail stages when a span ends.

An event is kept iff every stage keeps it. The probabilities of the stages that keep it multiply, and the
event's adjusted count is the inverse (a span kept at 1% stands for 100 spans). By default, level 1
(critical) events are kept whatever the stages say (``keep_critical``), and so are spans that fail
(``keep_failures``): a failing span that head sampling dropped is recorded when it ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .._safety import safe_str
from ._stage import SAMPLED_KINDS, Stage, Tally
from .consistent import keep_probability
from .limiters import KeyedRateLimiter
from .tail import TailSampler


class Pipeline:
    """Stages composed in order: ``Pipeline([Level(2), ParentBased(TraceIdRatio(0.1)), MinDuration("1ms")])``.

    Pass a pipeline, a stage or a list of stages to ``tracebridge.start(sampling=...)`` or
    ``tracebridge.configure(sampling=...)``.

    .. versionadded:: 0.1
    """

    def __init__(
        self, stages: Iterable[Stage], *, keep_critical: bool = True, keep_failures: bool = True
    ) -> None:
        stages = list(stages)
        for st in stages:
            if not isinstance(st, Stage):
                raise ValueError(f"Pipeline: expected sampling stages, got {st!r}")
        if len({id(st) for st in stages}) != len(stages):
            raise ValueError("Pipeline: the same stage object appears twice")
        self.stages = stages
        self.head_stages = [st for st in stages if not st.tail]
        self.tail_stages = [st for st in stages if st.tail]
        self.keep_critical = bool(keep_critical)
        self.keep_failures = bool(keep_failures)
        self.needs_name = any(st.needs_name for st in self.head_stages)
        #: A ParentBased stage among the head stages: spans inside a dropped trace are dropped at once.
        self.follows_parent = next(
            (st for st in self.head_stages if getattr(st, "follows_parent", False)), None
        )
        #: Events of this level and below are kept whatever the stages say.
        self.critical_level = 1 if self.keep_critical else 0
        #: The short cut for spans inside a dropped trace applies above this level (never without a
        #: ParentBased stage); it counts its drops as the ParentBased stage's.
        self.short_cut_level = self.critical_level if self.follows_parent is not None else 1 << 30
        self.short_cut_drops = (
            self.follows_parent.dropped_by_kind["span"] if self.follows_parent is not None else Tally()
        ).counter
        # When every head stage decides roots by trace randomness alone, a root is decided by one
        # comparison with the highest of their thresholds (consistent thresholds nest).
        thresholds = [st.root_threshold for st in self.head_stages]
        self.root_threshold: int | None = None
        if self.head_stages and all(t is not None for t in thresholds):
            self.root_threshold = max(t for t in thresholds if t is not None)
            self.root_decider = self.head_stages[thresholds.index(self.root_threshold)]
            self.root_weight = keep_probability(self.root_threshold) if self.root_threshold < 1 << 56 else 0.0
            #: Where roots dropped by that comparison are counted (the deciding stage's drops).
            self.root_drops = self.root_decider.dropped_by_kind["span"].counter
        #: Every weight the head stages give comes from a consistent threshold (or there is none): an
        #: event's adjusted count is then 1/p of one consistent probability p, and a TailSampler whose
        #: ``otherwise`` is consistent too nests with it.
        self.nests = all(st.consistent or not st.weighted for st in self.head_stages)
        self._overridden = {kind: Tally() for kind in SAMPLED_KINDS}
        self.on_flood_end: Callable[[Any, int], None] | None = None
        for st in stages:
            if isinstance(st, KeyedRateLimiter):
                st.on_flood_end = self._flood_end

    @classmethod
    def of(cls, sampling: Stage | Iterable[Stage] | Pipeline | None) -> Pipeline | None:
        """A pipeline from what ``start(sampling=...)`` accepts (``None`` stays ``None``)."""
        if sampling is None:
            return None
        if isinstance(sampling, Pipeline):
            return sampling
        if isinstance(sampling, Stage):
            return cls([sampling])
        if isinstance(sampling, (list, tuple)):
            return cls(sampling)
        raise ValueError(f"sampling: expected a stage, a list of stages or a Pipeline, got {sampling!r}")

    def _flood_end(self, key: Any, count: int) -> None:
        if self.on_flood_end is not None:
            self.on_flood_end(key, count)

    # -- decisions ---------------------------------------------------------------------------------

    def head(self, ev: Any) -> tuple[float, Stage | None]:
        """The probability with which the head stages keep ``ev``, and the stage that dropped it (then
        the probability is 0.0). Counts what each stage kept; the caller counts the drop with
        :meth:`count_drop` once the event is really gone (a span that then fails is kept after all)."""
        kind = ev.kind
        weight = 1.0  # the product of the independent stages' probabilities
        lowest = 1.0  # the lowest of the consistent stages': their decisions nest
        for st in self.head_stages:
            try:
                w = st.decide(ev)
            except Exception as exc:  # a broken stage keeps the event
                st.record_error("decide", exc)
                w = 1.0
            if not w:
                return 0.0, st
            next(st.kept_by_kind[kind].counter)
            if w != 1.0:
                # (Outside any trace each consistent stage draws randomness of its own: independent.)
                if st.consistent and (kind == "span" or ev.trace_id):
                    lowest = min(lowest, w)
                else:
                    weight *= w
        return weight * lowest, None

    def admit(self, rec: Any, parent: Any = None) -> bool:
        """The head stages' decision on a record made whole (an instant, activity or log message, or
        an OpenTelemetry span its own sampler kept); True if it is kept, and its adjusted count is set.
        Critical records are kept, and so are failed spans (``keep_failures``); inside a trace that a
        ParentBased stage dropped (``parent``, the span current when it happened), a record is dropped
        with it. Counts either way."""
        kind = rec.kind
        if self.keep_critical and rec.level <= 1:
            self.overridden(kind)
            return True
        if kind == "span" and rec.error is not None and self.keep_failures:
            self.overridden(kind)
            return True
        if parent is not None and not parent.sampled and self.follows_parent is not None:
            self.count_drop(self.follows_parent, kind)
            return False
        weight, dropped_by = self.head(rec)
        if dropped_by is not None:
            self.count_drop(dropped_by, kind)
            return False
        if weight != 1.0:
            rec.adjusted_count = 1.0 / weight
        return True

    @staticmethod
    def count_drop(stage: Stage, kind: str) -> None:
        next(stage.dropped_by_kind[kind].counter)

    def count_root_kept(self, kind: str) -> None:
        """Count a root kept by the one-comparison decision (see ``root_threshold``) for every stage."""
        for st in self.head_stages:
            next(st.kept_by_kind[kind].counter)

    def dropped_by_parent(self, kind: str) -> None:
        """Count an event dropped because its trace was (the ParentBased short cut)."""
        st = self.follows_parent
        if st is not None:
            next(st.dropped_by_kind[kind].counter)

    def overridden(self, kind: str) -> None:
        """Count an event kept against the stages' decision (critical, or failed)."""
        next(self._overridden[kind].counter)

    def tail(self, items: list[tuple[Any, Any]], start: int = 0) -> list[tuple[Any, Any]]:
        """Run the tail stages (from the ``start``-th on) over (thread, record) pairs on the writer
        thread; return what is kept."""
        for st in self.tail_stages[start:]:
            if isinstance(st, TailSampler):
                items = st.process(items, self._keeps_anyway, self.nests)
                continue
            kept = []
            critical = 1 if self.keep_critical else 0
            for item in items:
                rec = item[1]
                kind = rec.kind
                if rec.level <= critical:  # kept whatever the stages say (and counted so at the head)
                    kept.append(item)
                    continue
                try:
                    w = st.decide(rec)
                except Exception as exc:
                    st.record_error("decide", exc)
                    w = 1.0
                if w:
                    next(st.kept_by_kind[kind].counter)
                    if w != 1.0:
                        rec.adjusted_count /= w
                    kept.append(item)
                elif self._keeps_anyway(rec):
                    next(self._overridden[kind].counter)
                    kept.append(item)
                else:
                    next(st.dropped_by_kind[kind].counter)
            items = kept
        return items

    def _keeps_anyway(self, rec: Any) -> bool:
        return (self.keep_critical and rec.level <= 1) or (self.keep_failures and rec.error is not None)

    def flush(self) -> list[tuple[Any, Any]]:
        """At the end of a session: what tail stages still hold (decided now), and floods still going on."""
        for st in self.stages:
            if isinstance(st, KeyedRateLimiter):
                st.flush()
        out: list[tuple[Any, Any]] = []
        for i, st in enumerate(self.tail_stages):
            if isinstance(st, TailSampler):
                # What a TailSampler releases still passes the tail stages after it.
                out.extend(self.tail(st.flush(self._keeps_anyway, self.nests), start=i + 1))
        return out

    def after_fork(self) -> None:
        """In a forked child: locks that another thread of the parent held would stay held forever."""
        for st in self.stages:
            st.after_fork()

    # -- accounting --------------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        """Per stage (labelled ``"<position>:<stage>"``), what it kept and dropped, by kind; and the
        events kept against the stages' decision."""
        out: dict[str, Any] = {}
        for i, st in enumerate(self.stages):
            entry: dict[str, Any] = {"reason": st.reason, **st.counts()}
            errors = st.error_count.value
            if errors:
                entry["errors"] = errors
            if isinstance(st, TailSampler):
                if st.evicted:
                    entry["evicted"] = st.evicted
                if st.kept_anyway:
                    entry["kept_anyway"] = st.kept_anyway
            out[f"{i}:{safe_str(st)}"] = entry
        overridden = {k: c.value for k, c in self._overridden.items() if c.value}
        if overridden:
            out["kept_anyway"] = {"kept": overridden}
        return out

    def __repr__(self) -> str:
        return f"Pipeline({self.stages!r})"
