"""The event model: failures and their causes as files keep them."""

from __future__ import annotations

from tracebridge._model import MAX_CAUSES, ErrorInfo, Frame


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
