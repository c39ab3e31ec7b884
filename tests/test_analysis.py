from __future__ import annotations

from tracebridge._model import ErrorInfo, Event, Stats
from tracebridge.analysis import render, summarize


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
