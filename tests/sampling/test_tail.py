from __future__ import annotations

import random

from events import Ev, FakeClock

from tracebridge.sampling import AlwaysOff, AlwaysOn, TailSampler


def trace(trace_id: int, spans: int, *, failed: int | None = None, slow: bool = False) -> list[Ev]:
    """A trace's spans in the order they end: children first, the root last."""
    root = Ev("root", trace_id, start_ns=0, end_ns=10_000_000 if slow else 1_000)
    children = [
        Ev(f"child{i}", trace_id, start_ns=10, end_ns=20, parent=root, error="boom" if failed == i else None)
        for i in range(spans - 1)
    ]
    return [*children, root]


def arrivals(rng: random.Random, n: int, spread: int = 60) -> tuple[list[Ev], set[int]]:
    """Spans of ``n`` traces in the order a writer might see them: each trace's spans in end order, but
    traces interleaved and each span moved up to ``spread`` places (other threads' batches)."""
    keyed: list[tuple[float, Ev]] = []
    failed = set()
    for k in range(n):
        tid = rng.getrandbits(128)
        spans = trace(
            tid, rng.randint(2, 6), failed=0 if rng.random() < 0.1 else None, slow=rng.random() < 0.05
        )
        if any(s.error for s in spans):
            failed.add(tid)
        keyed.extend((k * 5 + i + rng.uniform(0, spread), s) for i, s in enumerate(spans))
    keyed.sort(key=lambda p: p[0])
    return [s for _, s in keyed], failed


def feed(sampler: TailSampler, clock: FakeClock, spans: list[Ev], chunk: int = 37) -> list[Ev]:
    kept: list[Ev] = []
    for i in range(0, len(spans), chunk):
        kept.extend(rec for _, rec in sampler.process([("t", s) for s in spans[i : i + chunk]]))
        clock.advance(0.01)
        traces_held, spans_held = sampler.held
        assert traces_held <= sampler.max_traces and spans_held <= sampler.max_spans
    return kept + [rec for _, rec in sampler.flush()]


def test_keeps_every_failed_trace_whole() -> None:
    rng = random.Random(1)
    clock = FakeClock(0.0)
    sampler = TailSampler(slower_than="5ms", otherwise=AlwaysOff(), wait=0.5, clock=clock)
    spans, failed = arrivals(rng, 1000)
    kept = feed(sampler, clock, spans)
    kept_ids = {id(r) for r in kept}
    assert failed and all(id(s) in kept_ids for s in spans if s.trace_id in failed)
    assert all(
        s.trace_id in failed
        or s.end_ns - s.start_ns >= 5_000_000
        or any(x.trace_id == s.trace_id and x.end_ns - x.start_ns >= 5_000_000 for x in spans)
        for s in kept
    )
    assert sampler.held == (0, 0) and sampler.evicted == 0


def test_holds_no_more_than_its_cap() -> None:
    rng = random.Random(2)
    clock = FakeClock(0.0)
    sampler = TailSampler(otherwise=AlwaysOff(), max_traces=20, max_spans=60, wait=0.5, clock=clock)
    spans, failed = arrivals(rng, 1000)
    kept = feed(sampler, clock, spans)  # feed() checks the cap after every batch
    assert sampler.evicted > 0
    # Under pressure traces are decided early, but no failure is lost: every failed span is kept, with
    # the rest of its trace from the failure on.
    kept_ids = {id(r) for r in kept}
    assert all(id(s) in kept_ids for s in spans if s.error)
    assert {r.trace_id for r in kept} >= failed


def test_whole_traces_in_order() -> None:
    sampler = TailSampler(keep_errors=True, otherwise=AlwaysOff(), wait=0)
    ok = trace(1, 3)
    bad = trace(2, 3, failed=1)
    out = sampler.process([("t", r) for r in ok + bad])
    assert [r.trace_id for _, r in out] == [2, 2, 2]
    # A span of a decided trace that arrives late follows the decision.
    late_ok = Ev("late", 1, start_ns=0, end_ns=1, parent=ok[-1])
    late_bad = Ev("late", 2, start_ns=0, end_ns=1, parent=bad[-1])
    assert [r for _, r in sampler.process([("t", late_ok), ("t", late_bad)])] == [late_bad]


def test_waits_for_spans_that_arrive_after_their_root() -> None:
    clock = FakeClock(0.0)
    sampler = TailSampler(otherwise=AlwaysOff(), wait=0.5, clock=clock)
    root, *_ = trace(9, 1)
    child = Ev("worker", 9, start_ns=1, end_ns=2, parent=root, error="failed on another thread")
    assert sampler.process([("t", root)]) == []  # held: other threads may still report
    clock.advance(0.2)
    assert sampler.process([("t", child)]) == []
    clock.advance(0.4)
    assert [r.name for _, r in sampler.process([])] == ["root", "worker"]


def test_otherwise_weights_what_it_keeps() -> None:
    sampler = TailSampler(otherwise=AlwaysOn(), wait=0)
    out = sampler.process([("t", r) for r in trace(5, 2)])
    assert len(out) == 2 and all(r.adjusted_count == 1.0 for _, r in out)


def test_other_kinds_pass_through() -> None:
    sampler = TailSampler(otherwise=AlwaysOff())
    instant = Ev("tick", 1, kind="instant")
    assert sampler.process([("t", instant)]) == [("t", instant)]
