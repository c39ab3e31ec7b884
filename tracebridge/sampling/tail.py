"""Tail sampling: decide whole traces when they end, keeping the ones that failed or were slow."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from .._units import parse_duration
from ._stage import SampledEvent, Stage, Tally
from .samplers import TraceIdRatio


class _HeldTrace:
    __slots__ = ("interesting", "items", "root_at")

    def __init__(self) -> None:
        self.items: list[tuple[Any, Any]] = []
        self.interesting = False
        self.root_at: float | None = None  # when its root span arrived


class TailSampler(Stage):
    """Holds each trace's spans until its root span ends, then keeps the whole trace if any span failed
    (``keep_errors``) or took longer than ``slower_than``, and otherwise lets ``otherwise`` decide (by
    default ``TraceIdRatio(0.01)``).

    A trace is decided ``wait`` seconds after its root arrives, so that spans of other threads that ended
    before it, but reach the writer later, are part of the decision. Memory is bounded: at most
    ``max_traces`` traces and ``max_spans`` spans are held; past that the oldest trace is decided at once
    with what has arrived of it (counted in ``evicted``). Spans that arrive after their trace was decided
    follow the decision (the last ``remember`` decisions are kept), except that a failed or slow span
    turns a dropped trace into a kept one from then on. Runs on the writer thread, never on the
    application's.

    .. versionadded:: 0.1
    """

    reason = "sampled_out"
    tail = True

    def __init__(
        self,
        keep_errors: bool = True,
        slower_than: Any = None,
        otherwise: Stage | None = None,
        *,
        max_traces: int = 1000,
        max_spans: int = 100_000,
        remember: int = 10_000,
        wait: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        for name, value in (("max_traces", max_traces), ("max_spans", max_spans), ("remember", remember)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TailSampler({name}) must be a positive integer, got {value!r}")
        if otherwise is not None and (not isinstance(otherwise, Stage) or otherwise.tail):
            raise ValueError(f"TailSampler(otherwise) must be a head sampling stage, got {otherwise!r}")
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0:
            raise ValueError(f"TailSampler(wait) must be a number of seconds >= 0, got {wait!r}")
        self.wait = float(wait)
        self._clock = clock
        self.keep_errors = bool(keep_errors)
        self.slower_than = (
            None if slower_than is None else parse_duration(slower_than, "TailSampler(slower_than)")
        )
        self.otherwise = otherwise if otherwise is not None else TraceIdRatio(0.01)
        self.max_traces = max_traces
        self.max_spans = max_spans
        self.remember = remember
        self._held: OrderedDict[int, _HeldTrace] = OrderedDict()
        self._held_spans = 0
        self._decided: OrderedDict[int, float] = OrderedDict()
        self._evicted = Tally()
        self._keep_anyway: Callable[[Any], bool] | None = None
        self._head_nests = False
        #: Spans kept although their trace was not (critical or failed spans, as the pipeline wants).
        self.kept_anyway = 0

    def after_fork(self) -> None:
        self.otherwise.after_fork()

    @property
    def held(self) -> tuple[int, int]:
        """(traces, spans) held now."""
        return len(self._held), self._held_spans

    @property
    def evicted(self) -> int:
        return self._evicted.value

    def decide(self, ev: SampledEvent) -> float:  # pragma: no cover - the pipeline calls process()
        raise TypeError("TailSampler decides whole traces: use it in a Pipeline")

    def process(
        self,
        items: list[tuple[Any, Any]],
        keep_anyway: Callable[[Any], bool] | None = None,
        head_nests: bool = False,
    ) -> list[tuple[Any, Any]]:
        """Take (thread, record) pairs; return those whose trace is decided and kept. Records for which
        ``keep_anyway`` is true (the pipeline keeps critical and failed spans) are kept even when their
        trace is not; they still count toward the trace's decision. ``head_nests``: the records' adjusted
        counts come from consistent head stages only (see :attr:`Pipeline.nests`)."""
        self._keep_anyway = keep_anyway
        self._head_nests = head_nests
        out: list[tuple[Any, Any]] = []
        now = self._clock()
        for item in items:
            rec = item[1]
            if rec.kind != "span":
                out.append(item)
                continue
            trace_id = rec.trace_id
            decided = self._decided.get(trace_id)
            if decided is not None:
                if not decided and self._interesting(rec):
                    decided = self._decided[trace_id] = 1.0  # a failure after all: keep the rest
                self._apply(decided, [item], out)
                continue
            held = self._held.get(trace_id)
            if held is None:
                held = self._held[trace_id] = _HeldTrace()
            held.items.append(item)
            self._held_spans += 1
            if not held.interesting:
                held.interesting = self._interesting(rec)
            if rec.parent is None and held.root_at is None:
                held.root_at = now
        due = [
            tid
            for tid, held in self._held.items()
            if held.root_at is not None and now - held.root_at >= self.wait
        ]
        for trace_id in due:
            self._settle(trace_id, out)
        while len(self._held) > self.max_traces or self._held_spans > self.max_spans:
            self._evicted.add()
            self._settle(next(iter(self._held)), out)
        return out

    def flush(
        self, keep_anyway: Callable[[Any], bool] | None = None, head_nests: bool = False
    ) -> list[tuple[Any, Any]]:
        """Decide every trace still held (their roots never ended)."""
        self._keep_anyway = keep_anyway
        self._head_nests = head_nests
        out: list[tuple[Any, Any]] = []
        while self._held:
            self._settle(next(iter(self._held)), out)
        return out

    def _interesting(self, rec: Any) -> bool:
        if self.keep_errors and rec.error is not None:
            return True
        return self.slower_than is not None and rec.end_ns - rec.start_ns >= self.slower_than

    def _settle(self, trace_id: int, out: list[tuple[Any, Any]]) -> None:
        held = self._held.pop(trace_id)
        self._held_spans -= len(held.items)
        if held.interesting:
            weight = 1.0
        else:
            root = next((rec for _, rec in held.items if rec.parent is None), held.items[-1][1])
            weight = self.otherwise.decide(root)
        self._decided[trace_id] = weight
        while len(self._decided) > self.remember:
            self._decided.popitem(last=False)
        self._apply(weight, held.items, out)

    def _apply(self, weight: float, items: list[tuple[Any, Any]], out: list[tuple[Any, Any]]) -> None:
        if weight:
            # A consistent ``otherwise`` after consistent head stages: the trace was kept with the lower
            # of the two probabilities (the decisions nest), so its adjusted count is the larger one.
            nested = self._head_nests and self.otherwise.consistent
            keep_anyway = self._keep_anyway
            for item in items:
                rec = item[1]
                # (A record kept whatever the trace's fate, critical or failed, stands for itself.)
                if weight != 1.0 and (keep_anyway is None or not keep_anyway(rec)):
                    if nested:
                        rec.adjusted_count = max(rec.adjusted_count, 1.0 / weight)
                    else:
                        rec.adjusted_count /= weight
                next(self.kept_by_kind["span"].counter)
            out.extend(items)
        else:
            keep_anyway = self._keep_anyway
            for item in items:
                if keep_anyway is not None and keep_anyway(item[1]):
                    out.append(item)
                    self.kept_anyway += 1
                else:
                    next(self.dropped_by_kind["span"].counter)

    def __repr__(self) -> str:
        slow = f"{self.slower_than}ns" if self.slower_than is not None else None
        return (
            f"TailSampler(keep_errors={self.keep_errors}, slower_than={slow}, otherwise={self.otherwise!r})"
        )
