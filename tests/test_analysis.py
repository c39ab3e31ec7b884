from __future__ import annotations

import pytest

from tracebridge import analysis
from tracebridge._model import ErrorInfo, Event, Frame, Loss, Stats, ThreadInfo
from tracebridge.analysis import EXACT_DURATIONS, OTHER, render, summarize


def span(name: str, start: int, end: int, tid: int = 1, **kw: object) -> Event:
    return Event("span", name, start, end, 1, {}, tid, f"t{tid}", **kw)  # type: ignore[arg-type]


def test_totals_self_time_percentiles_threads() -> None:
    events = [
        span("outer", 0, 100),
        span("inner", 10, 40),
        span("inner", 50, 60),
        span("outer", 200, 300, tid=2),
        span("leaf", 400, 401, tid=2, error=ErrorInfo("KeyError", "k")),
    ]
    s = summarize(events, Stats(recorded={"span": 5}, dropped={"queue_full": {"span": 3}}))
    ops = {o.name: o for o in s.operations}
    assert [o.name for o in s.operations] == ["outer", "inner", "leaf"]
    assert (ops["outer"].count, ops["outer"].total_ns, ops["outer"].self_ns) == (2, 200, 160)
    assert (ops["inner"].p50_ns, ops["inner"].p95_ns, ops["inner"].max_ns, ops["inner"].mean_ns) == (
        10,
        30,
        30,
        20,
    )
    assert ops["leaf"].errors == 1
    threads = {t.thread_id: t for t in s.threads}
    assert threads[1].busy_ns == 100 and threads[2].busy_ns == 101
    assert s.failures[0].type == "KeyError"
    assert s.duration_ns == 401
    text = render(s)
    assert "dropped (queue_full): 3 span" in text
    assert "1x leaf: KeyError: k" in text


def test_unfinished_and_empty() -> None:
    s = summarize([Event("activity", "a", 5, None)])
    assert s.unfinished == 1 and s.operations == []
    assert "did not end" in render(s)
    assert render(summarize([])).startswith("0 events")


def test_where_events_went_missing() -> None:
    t1, t2 = ThreadInfo(1, 1, "t1"), ThreadInfo(1, 2, "t2")
    markers = [
        Loss({"queue_full": 1000}, 2_000_000, 2_500_000).marker(t1),
        Loss({"queue_full": 500, "sink_error": 7}, 9_000_000, 9_000_000).marker(t1),
        Loss({"writer_stalled": 3}, 4_000_000, 4_000_000).marker(t2),
    ]
    stats = Stats(recorded={"span": 1}, dropped={"queue_full": {"span": 1500}, "sink_error": {"span": 7}})
    s = summarize([span("a", 1_000_000, 1_000_100)], stats, markers)
    assert [(g.thread_name, g.gaps, g.dropped, g.first_ns, g.last_ns) for g in s.gaps] == [
        ("t1", 2, {"queue_full": 1500, "sink_error": 7}, 1_000_000, 8_000_000),
        ("t2", 1, {"writer_stalled": 3}, 3_000_000, 3_000_000),
    ]
    text = render(s)
    assert "Where events went missing" in text
    section = text.split("Where events went missing")[1].splitlines()
    line = next(x for x in section if x.strip().startswith("t1"))
    assert line.split() == [
        "t1",
        "1",
        "2",
        "1,507",
        "queue_full",
        "1,500,",
        "sink_error",
        "7",
        "+1000us",
        "+8000us",
    ]


def test_percentiles_past_the_exact_ones_are_within_one_percent() -> None:
    import random

    rng = random.Random(7)
    durations = [int(rng.lognormvariate(10, 1.5)) + 1 for _ in range(EXACT_DURATIONS * 5)]
    s = summarize([span("op", 0, d) for d in durations])
    op = s.operations[0]
    ordered = sorted(durations)
    for got, q in ((op.p50_ns, 0.50), (op.p95_ns, 0.95)):
        exact = ordered[round(q * len(ordered) + 0.5 - 1e-9) - 1]
        assert abs(got - exact) <= 0.01 * exact + 1, (q, got, exact)
    assert op.max_ns == ordered[-1] and op.count == len(durations)


def test_names_and_failures_past_the_caps_are_added_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analysis, "MAX_OPERATIONS", 3)
    monkeypatch.setattr(analysis, "MAX_FAILURES", 2)
    events = [span(f"n{i}", 10 * i, 10 * i + 5, error=ErrorInfo("E", f"m{i}")) for i in range(6)]
    s = summarize(events)
    assert sorted(o.name for o in s.operations) == [OTHER, "n0", "n1", "n2"]
    other = next(o for o in s.operations if o.name == OTHER)
    assert (other.count, other.total_ns, other.errors) == (3, 15, 3)
    assert sorted((f.name, f.count) for f in s.failures) == [(OTHER, 4), ("n0", 1), ("n1", 1)]


def test_a_summary_does_not_depend_on_the_order_of_events() -> None:
    events = [
        span("outer", 0, 100),
        span("inner", 10, 40, error=ErrorInfo("E", "x", (Frame("f", "a.py", 1),))),
        span("inner", 50, 60, error=ErrorInfo("E", "x", (Frame("g", "b.py", 2),))),
        span("outer", 200, 300, tid=2),
        span("leaf", 400, 401, tid=2),
    ]
    first = summarize(events).as_dict()
    assert summarize(events[::-1]).as_dict() == first
    assert first["failures"][0]["where"] == "f (a.py:1)"  # (the earliest)


def test_busy_time_counts_spans_under_one_that_never_ended() -> None:
    """A crash inside ``main``: its span never ends, the spans it ran did; the thread was busy then."""
    events = [
        Event("span", "main", 0, None, 1, {}, 1, "t1"),
        span("step", 10, 60),
        span("inner", 20, 30),
        span("step", 100, 300),
    ]
    s = summarize(events)
    assert s.unfinished == 1
    assert [(t.thread_id, t.spans, t.busy_ns) for t in s.threads] == [(1, 3, 250)]
