"""Sampling wired into sessions: what is recorded, what is counted, what reaches the trace."""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge.sampling import (
    AlwaysOff,
    Directives,
    KeyedRateLimiter,
    Level,
    MinDuration,
    Names,
    ParentBased,
    PerOperation,
    Pipeline,
    Probability,
    TailSampler,
    TraceIdRatio,
)

from helpers import record


@pytest.fixture(autouse=True)
def _seeded() -> Any:
    """Trace ids (and so consistent sampling decisions) come from the random module: seeded, the
    statistical bounds below hold on every run, not only on most."""
    state = random.getstate()
    random.seed(20261201)
    yield
    random.setstate(state)


def spans(session: tracebridge.Session, name: str | None = None) -> list[tracebridge.Event]:
    return [e for e in session.events if e.kind == "span" and (name is None or e.name == name)]


def test_parent_based_keeps_whole_traces_and_counts_every_drop() -> None:
    def work() -> None:
        for i in range(2000):
            with tracebridge.span("request", level=2, i=i), tracebridge.span("db", level=2):
                tracebridge.instant("row", level=2)

    session = record(work, sampling=ParentBased(TraceIdRatio(0.25)))
    roots = spans(session, "request")
    assert 0.2 < len(roots) / 2000 < 0.3
    kept = {e.trace_id for e in roots}
    assert all(e.trace_id in kept for e in session.events)  # no orphans: traces are whole
    assert all(e.adjusted_count == pytest.approx(4.0) for e in session.events)
    st = session.stats
    assert st.recorded["span"] + st.dropped["sampled_out"]["span"] == 4000
    assert st.recorded["instant"] + st.dropped["sampled_out"]["instant"] == 2000
    (entry,) = st.sampling.values()
    assert entry["reason"] == "sampled_out" and entry["dropped"]["span"] == st.dropped["sampled_out"]["span"]


def test_the_same_trace_decides_the_same_in_two_sessions() -> None:
    ids: dict[str, list[int]] = {}

    def work() -> None:
        for _ in range(300):
            with tracebridge.span("r", level=2) as s:
                pass
            ids.setdefault("all", []).append(s.trace_id)

    first = record(work, sampling=TraceIdRatio(0.3))
    sampler = TraceIdRatio(0.3)
    from events import Ev

    expected = {t for t in ids["all"] if sampler.decide(Ev(trace_id=t))}
    assert {e.trace_id for e in first.events} == expected


def test_critical_events_and_failures_are_kept_whatever_sampling_says() -> None:
    def work() -> None:
        for _ in range(10):
            with tracebridge.span("critical", level=1):
                pass
            with tracebridge.span("routine", level=2):
                pass
        with pytest.raises(KeyError), tracebridge.span("failing", level=2):
            raise KeyError("lost?")

    session = record(work, sampling=AlwaysOff())
    names = [e.name for e in spans(session)]
    assert names.count("critical") == 10 and "routine" not in names
    (failing,) = spans(session, "failing")
    assert failing.error is not None and failing.error.type == "KeyError"
    assert session.stats.dropped["sampled_out"]["span"] == 10
    assert session.stats.sampling["kept_anyway"]["kept"]["span"] == 11
    strict = record(work, sampling=Pipeline([AlwaysOff()], keep_critical=False, keep_failures=False))
    assert spans(strict) == []


def test_a_dropped_root_that_fails_is_recorded_whole() -> None:
    # Roots dropped by the one-comparison decision are made with only what a dropped span needs; one
    # that fails (raised or marked) must come out as a whole span: resolved lazy name and metadata, its
    # own trace id, weight 1.
    ids: list[int] = []

    def work() -> None:
        with pytest.raises(ValueError), tracebridge.span(lambda: "lazy root", level=2, path="a.toml") as s:
            s.append_metadata(lambda: {"rows": 3})
            ids.append(s.trace_id)
            raise ValueError("bad row")
        with tracebridge.span("marked", level=2) as m:
            m.fail(RuntimeError("gave up"))
            ids.append(m.trace_id)
        with tracebridge.span("quiet", level=2):
            pass

    session = record(work, sampling=ParentBased(TraceIdRatio(0.0)))
    lazy, marked = spans(session)
    assert (lazy.name, lazy.metadata, lazy.error.type if lazy.error else None) == (
        "lazy root",
        {"path": "a.toml", "rows": 3},
        "ValueError",
    )
    assert marked.name == "marked" and marked.error is not None and marked.error.message == "gave up"
    assert [lazy.trace_id, marked.trace_id] == ids and all(e.adjusted_count == 1.0 for e in (lazy, marked))
    assert lazy.end_ns >= lazy.start_ns > 0
    assert session.stats.dropped["sampled_out"]["span"] == 1  # "quiet"; the failures were kept


def test_inside_a_dropped_trace_spans_are_cheap_objects() -> None:
    seen: list[object] = []

    def work() -> None:
        with tracebridge.span("root", level=2) as root, tracebridge.span("child", level=2) as child:
            seen.extend([root, child])
            assert tracebridge.current_span() is root  # the dropped root is still the current span
            assert root.trace_id != 0

    session = record(work, sampling=ParentBased(AlwaysOff()))
    assert session.events == []
    root, child = seen
    assert not root.sampled  # type: ignore[attr-defined]
    assert type(child).__name__ == "_OffSpan"


def test_tail_stages_run_on_the_writer(trace_path: Path) -> None:
    tracebridge.start(level=3, output=trace_path, sampling=[Level(2), MinDuration({"fast*": "1ms", "*": 0})])
    with tracebridge.span("fast_op", level=2):
        pass
    with tracebridge.span("other", level=2):
        pass
    with tracebridge.span("verbose", level=3):
        pass
    session = tracebridge.stop()
    assert [e.name for e in tracebridge.read(trace_path)] == ["other"]
    assert session.stats.dropped == {"filtered": {"span": 2}}
    trace = tracebridge.reading.read_trace(trace_path)
    assert trace.stats is not None and trace.stats.sampling == session.stats.sampling


def test_tail_sampler_in_a_session_keeps_failed_traces() -> None:
    def request(fail: bool) -> None:
        with tracebridge.span("request", level=2):
            with tracebridge.span("step", level=2):
                pass
            if fail:
                try:
                    with tracebridge.span("charge", level=2):
                        raise ValueError("declined")
                except ValueError:
                    pass

    def work() -> None:
        for i in range(50):
            request(fail=i % 10 == 0)

    session = record(work, sampling=TailSampler(otherwise=AlwaysOff(), wait=0))
    kept_traces = {e.trace_id for e in session.events}
    assert len(kept_traces) == 5
    assert len(spans(session)) == 15  # three spans in each failed trace
    assert session.stats.dropped["sampled_out"]["span"] == 45 * 2


def kept_share_and_weights(sampling: object, n: int = 4000) -> tuple[float, set[float], set[float]]:
    def work() -> None:
        for _ in range(n):
            with tracebridge.span("request", level=2), tracebridge.span("step", level=2):
                pass

    session = record(work, sampling=sampling)
    roots = spans(session, "request")
    return (
        len(roots) / n,
        {e.adjusted_count for e in roots},
        {e.adjusted_count for e in spans(session, "step")},
    )


@pytest.mark.parametrize(
    ("sampling", "share"),
    [
        # Consistent decisions nest: together they keep with the lowest probability, not the product.
        (lambda: [ParentBased(TraceIdRatio(0.5)), PerOperation({"*": 0.25})], 0.25),
        (lambda: [ParentBased(TraceIdRatio(0.25)), PerOperation({"*": 0.5})], 0.25),
        # ... at the tail too: a TailSampler's consistent `otherwise` after a consistent head.
        (lambda: [ParentBased(TraceIdRatio(0.5)), TailSampler(otherwise=TraceIdRatio(0.25), wait=0)], 0.25),
        (lambda: [ParentBased(TraceIdRatio(0.25)), TailSampler(otherwise=TraceIdRatio(0.5), wait=0)], 0.25),
        # An independent draw multiplies (and draws again for every span: traces are not whole).
        (lambda: [ParentBased(TraceIdRatio(0.5)), Probability(0.5, rng=random.Random(3))], 0.25),
    ],
)
def test_adjusted_counts_are_true_to_the_combined_probability(sampling: Any, share: float) -> None:
    stages = sampling()
    kept, root_weights, child_weights = kept_share_and_weights(stages)
    assert share * 0.85 < kept < share * 1.15
    assert len(root_weights) == 1 and root_weights.pop() == pytest.approx(1 / share)
    if not any(isinstance(st, Probability) for st in stages):
        assert len(child_weights) == 1 and child_weights.pop() == pytest.approx(1 / share)


def test_keyed_rate_limiter_reports_suppressed_events() -> None:
    def work() -> None:
        for _ in range(50):
            tracebridge.instant("noisy", level=2)

    session = record(work, sampling=KeyedRateLimiter(1.0, burst=5))
    names = [e.name for e in session.events]
    assert names.count("noisy") == 5
    (summary,) = [e for e in session.events if e.name.startswith("suppressed")]
    assert summary.name == "suppressed 45 similar events"
    assert summary.metadata == {"key": "noisy", "suppressed": 45}
    assert session.stats.dropped["rate_limited"]["instant"] == 45


def test_lazy_names_are_resolved_for_name_based_stages() -> None:
    def work() -> None:
        with tracebridge.span(lambda: "secret.op", level=2):
            pass
        with tracebridge.span(lambda: "public.op", level=2):
            pass

    session = record(work, sampling=Names(exclude=["secret.*"]))
    assert [e.name for e in session.events] == ["public.op"]


def test_environment_directives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEBRIDGE_FILTER", "app.db=3,*=2")

    def work() -> None:
        for name in ("app.db.query", "app.web.get"):
            with tracebridge.span(name, level=3):
                pass

    session = record(work, level=3)
    assert [e.name for e in session.events] == ["app.db.query"]
    monkeypatch.setenv("TRACEBRIDGE_FILTER", "app.db=loud")
    session = tracebridge.start()  # a bad value: one line on stderr, nothing recorded, no exception
    work()
    assert tracebridge.stop() is session and session.stats.total_recorded == 0
    assert session.format == "none"


def test_configure_sampling_applies_to_later_sessions() -> None:
    tracebridge.configure(sampling=[Directives("*=1")])
    try:
        session = record(lambda: [tracebridge.instant("x", level=2), tracebridge.instant("y", level=1)])
    finally:
        tracebridge.configure(sampling=None)
    assert [e.name for e in session.events] == ["y"]
    with pytest.raises(ValueError, match="sampling: expected a stage"):
        tracebridge.configure(sampling="everything")


def test_live_stats() -> None:
    tracebridge.start(sampling=ParentBased(AlwaysOff()))
    try:
        for _ in range(7):
            with tracebridge.span("r", level=2):
                pass
        live = tracebridge.stats()
        assert live.dropped == {"sampled_out": {"span": 7}}
    finally:
        session = tracebridge.stop()
    assert tracebridge.stats() is session.stats


def test_sampling_under_threads_accounts_for_everything() -> None:
    def worker() -> None:
        for _ in range(2000):
            with tracebridge.span("op", level=2), tracebridge.span("inner", level=2):
                pass

    def work() -> None:
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)

    session = record(work, sampling=ParentBased(TraceIdRatio(0.1)))
    st = session.stats
    assert st.recorded["span"] + sum(by.get("span", 0) for by in st.dropped.values()) == 8 * 2000 * 2


def test_critical_spans_are_counted_kept_anyway_once_with_tail_stages() -> None:
    def work() -> None:
        for _ in range(100):
            with tracebridge.span("critical", level=1):
                pass

    session = record(work, sampling=[MinDuration("1ms")])
    assert len(spans(session, "critical")) == 100
    assert session.stats.sampling["kept_anyway"]["kept"]["span"] == 100


def test_consistent_stages_outside_traces_and_after_an_independent_root() -> None:
    def instants() -> None:
        for _ in range(4000):
            tracebridge.instant("tick", level=2)  # no trace: each stage draws its own randomness

    session = record(instants, sampling=[TraceIdRatio(0.5), PerOperation({}, default=0.5)])
    assert 0.2 < len(session.events) / 4000 < 0.3
    assert {e.adjusted_count for e in session.events} == {4.0}
    # ParentBased over an independent draw is not consistent: with a consistent stage, it multiplies.
    stages = [ParentBased(Probability(0.5, rng=random.Random(5))), TraceIdRatio(0.5)]
    kept, root_weights, _ = kept_share_and_weights(stages)
    assert 0.2 < kept < 0.3 and root_weights == {4.0}


def test_tail_sampler_leaves_critical_spans_unweighted() -> None:
    def work() -> None:
        for _ in range(400):
            with tracebridge.span("request", level=2), tracebridge.span("audit", level=1):
                pass

    session = record(work, sampling=[TailSampler(otherwise=TraceIdRatio(0.5), wait=0)])
    assert len(spans(session, "audit")) == 400  # critical: kept whatever the trace's fate
    assert {e.adjusted_count for e in spans(session, "audit")} == {1.0}
    assert {e.adjusted_count for e in spans(session, "request")} == {2.0}


def test_a_dropped_roots_trace_id_is_the_draw_of_the_random_module() -> None:
    # random.getrandbits(128) on the pure path; on the compiled one the same draw from random's own
    # generator, read in place: seeded, both give these trace ids, and random goes on alike after them.
    ids: list[int] = []

    def work() -> None:
        for _ in range(1000):  # (4,000 words: more than one block of the generator's state)
            with tracebridge.span("r", level=2) as s:
                ids.append(s.trace_id)

    random.seed(12)
    record(work, sampling=ParentBased(TraceIdRatio(0.0)))
    after = random.random()
    random.seed(12)
    assert ids == [random.getrandbits(128) or 1 for _ in ids]
    assert random.random() == after


def test_roots_follow_the_pipeline_of_each_session() -> None:
    # (The compiled path reads a pipeline's threshold once: a later session's pipeline is read anew.)
    def work() -> None:
        for _ in range(20):
            with tracebridge.span("r", level=2):
                pass

    for ratio, kept in [(0.0, 0), (1.0, 20), (0.0, 0)]:
        assert len(spans(record(work, sampling=ParentBased(TraceIdRatio(ratio))))) == kept


@pytest.mark.skipif(not tracebridge.accelerated, reason="the compiled path only")
def test_a_generator_of_another_kind_is_called_as_it_is() -> None:
    from tracebridge import spans as spans_module
    from tracebridge._accel import speedups
    from tracebridge.sampling.consistent import RANDOMNESS_MASK

    assert speedups is not None
    configure = speedups.configure_sampling
    args = (spans_module.DroppedSpan, spans_module._sampled_span)
    draws: list[int] = []

    def getrandbits(k: int) -> int:
        draws.append(random.getrandbits(k))
        return draws[-1]

    assert configure(*args, getrandbits, RANDOMNESS_MASK) is False  # (not CPython's generator: called)
    try:
        ids: list[int] = []

        def work() -> None:
            for _ in range(5):
                with tracebridge.span("r", level=2) as s:
                    ids.append(s.trace_id)

        record(work, sampling=ParentBased(TraceIdRatio(0.0)))
        assert ids == draws and len(ids) == 5
    finally:
        assert configure(*args, spans_module._getrandbits, RANDOMNESS_MASK) is True
