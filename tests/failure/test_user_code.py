"""User callables and values that fail: the application never sees tracebridge's exceptions (except in
strict mode, which the test suite runs in), and every failure is counted."""

from __future__ import annotations

import pytest

import tracebridge

from helpers import record


def boom() -> str:
    raise RuntimeError("lazy failure")


def test_failing_lazy_name_and_metadata_keep_the_span(lenient: None) -> None:
    def work() -> None:
        with tracebridge.span(boom) as s:
            s.append_metadata(lambda: 1 / 0)  # type: ignore[arg-type,return-value]
            s.set(ok=True)

    session = record(work)
    (ev,) = session.events
    assert ev.name == "<lazy name failed: RuntimeError>"
    assert ev.metadata == {"ok": True}
    assert session.stats.internal_errors == 2


def test_strict_mode_raises_internal_errors() -> None:
    def work() -> None:
        with tracebridge.span(boom):
            pass

    with pytest.raises(RuntimeError, match="lazy failure"):
        record(work)


def test_bad_counter_value_is_counted(lenient: None) -> None:
    session = record(lambda: tracebridge.counter("c", "not a number"))  # type: ignore[arg-type]
    assert session.stats.dropped == {"internal_error": {"counter": 1}}
    assert session.events == []


class Hostile:
    def __repr__(self) -> str:
        raise ValueError("nope")

    def __str__(self) -> str:
        raise ValueError("nope")


def test_hostile_values_never_reach_the_application(lenient: None, tmp_path) -> None:  # type: ignore[no-untyped-def]
    loop: list[object] = []
    loop.append(loop)
    path = tmp_path / "t.perfetto-trace"
    tracebridge.start(output=path)
    with tracebridge.span(
        "s", hostile=Hostile(), loop=loop, nan=float("nan"), raw=b"\xff", huge="x" * 100_000
    ):
        tracebridge.instant(Hostile(), value=Hostile())  # type: ignore[arg-type]
    session = tracebridge.stop()
    events = {e.name: e for e in tracebridge.read(path)}
    md = events["s"].metadata
    assert md["hostile"] == "<unrepresentable Hostile: ValueError>"
    assert md["loop"] == ["<cycle>"]
    assert md["raw"] == "b'\\xff'"
    assert md["huge"].endswith("…[+83616 chars]")
    assert session.stats.sanitized >= 3
    assert "<unrepresentable Hostile: ValueError>" in events


def test_exception_with_failing_str_still_records_the_failure() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    def work() -> None:
        with pytest.raises(Weird), tracebridge.span("s"):
            raise Weird()

    (ev,) = record(work).events
    assert ev.error is not None and ev.error.type.endswith("Weird")
    assert ev.error.message.startswith("<unrepresentable Weird")
