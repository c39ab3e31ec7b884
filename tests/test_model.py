"""The event model: failures and their causes as files keep them."""

from __future__ import annotations

from tracebridge._model import MAX_CAUSES, ErrorInfo, Frame, Stats


def test_cause_chains_from_files_are_bounded_and_round_trip() -> None:
    outer = ErrorInfo(
        "RuntimeError",
        "wrapped",
        (Frame("load", "app.py", 3),),
        ErrorInfo("KeyError", "'k'", (Frame("get", "app.py", 9),), ErrorInfo("OSError", "disk"), False),
    )
    assert ErrorInfo("RuntimeError", "wrapped", outer.frames).with_causes(outer.causes()) == outer
    # A crafted file with a very long chain: kept to MAX_CAUSES, and format() still works.
    deep = ErrorInfo("E", "m").with_causes([{"type": f"C{i}", "message": ""} for i in range(5000)])
    depth, link = 0, deep
    while link.cause is not None:
        depth, link = depth + 1, link.cause
    assert depth == MAX_CAUSES and deep.format().count("(which caused:)") == MAX_CAUSES
    assert ErrorInfo("E", "m").with_causes("not a chain") == ErrorInfo("E", "m")


def test_the_stats_headline_says_what_was_lost_apart_from_what_was_left_out() -> None:
    stats = Stats(recorded={"span": 1000, "log": 64})
    assert stats.headline() == "tracebridge: 1,064 events recorded"
    stats.count_drop("sampled_out", "span", 5000)
    assert stats.headline() == "tracebridge: 1,064 events recorded, 5,000 left out (sampled_out)"
    stats.count_drop("queue_full", "span", 900)
    stats.count_drop("queue_full", "log", 36)
    stats.count_drop("fork_inherited", "span", 5)  # (written by the parent: not lost)
    assert stats.lost == {"queue_full": 936}
    assert stats.headline() == (
        "tracebridge: 1,064 events recorded, 936 lost (queue_full), 5,005 left out (fork_inherited 5,"
        " sampled_out 5,000)"
    )
    stats.count_drop("sink_error", "span", 2)
    assert stats.headline().startswith(
        "tracebridge: 1,064 events recorded, 938 lost (queue_full 936, sink_error 2)"
    )


def test_the_stats_of_two_sessions_add_up() -> None:
    a = Stats(
        recorded={"span": 10}, dropped={"queue_full": {"span": 500}}, sampling={"0:Probability": {"kept": 3}}
    )
    b = Stats(
        recorded={"span": 20, "log": 1}, scrubbed=2, sampling={"0:Probability": {"kept": 4, "dropped": 1}}
    )
    both = a.merge(b)
    assert both.recorded == {"span": 30, "log": 1} and both.dropped == {"queue_full": {"span": 500}}
    assert both.scrubbed == 2 and both.sampling == {"0:Probability": {"kept": 7, "dropped": 1}}
    assert both.headline() == "tracebridge: 31 events recorded, 500 lost (queue_full)"
