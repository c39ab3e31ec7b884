from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import tracebridge

from helpers import record


def test_start_twice_is_a_clear_error() -> None:
    tracebridge.start()
    try:
        with pytest.raises(RuntimeError, match="already active"):
            tracebridge.start()
    finally:
        tracebridge.stop()


def test_stop_without_session() -> None:
    with pytest.raises(RuntimeError, match="no tracebridge session"):
        tracebridge.stop()
    assert tracebridge.shutdown() is None
    assert tracebridge.flush() is True


@pytest.mark.parametrize("level", [0, -1, 1.5, "2", True])
def test_bad_level(level: object) -> None:
    with pytest.raises(ValueError, match="level must be an integer"):
        tracebridge.start(level=level)  # type: ignore[arg-type]


def test_bad_format_and_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be"):
        tracebridge.start(output=tmp_path / "t", format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs an output path"):
        tracebridge.start(format="json")
    with pytest.raises(OSError):
        tracebridge.start(output=tmp_path / "missing-dir" / "t.perfetto-trace")
    with pytest.raises(IsADirectoryError):
        tracebridge.start(output=tmp_path)


def test_symlinked_output_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "trace.perfetto-trace"
    link.symlink_to(target)
    with pytest.raises(OSError, match="symlink"):
        tracebridge.start(output=link)
    assert target.read_text() == "keep me"


def test_existing_trace_is_replaced(trace_path: Path) -> None:
    trace_path.write_bytes(b"old contents that are not a trace")
    tracebridge.start(output=trace_path)
    tracebridge.stop()
    assert trace_path.read_bytes()[:1] == b"\x0a"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("max_string", 0, "max_string must be a positive integer"),
        ("flush_interval", -1, "flush_interval must be a positive number"),
        ("scrub", "(", "not a valid regular expression"),
        ("nonsense", 1, "unknown option 'nonsense'"),
    ],
)
def test_configure_rejects_bad_options(option: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tracebridge.configure(**{option: value})


def test_session_stats_count_by_kind() -> None:
    def work() -> None:
        for _ in range(3):
            with tracebridge.span("s"):
                tracebridge.instant("i")
        tracebridge.counter("c", 1)

    session = record(work)
    assert session.stats.recorded == {"span": 3, "instant": 3, "counter": 1, "activity": 0, "log": 0}
    assert session.stats.total_dropped == 0
    assert session.stopped and "stopped" in repr(session)


def test_events_in_start_order_across_threads() -> None:
    def work() -> None:
        def child() -> None:
            with tracebridge.span("child"):
                time.sleep(0.002)

        with tracebridge.span("parent"):
            t = threading.Thread(target=child)
            t.start()
            t.join()

    session = record(work)
    starts = [e.start_ns for e in session.events]
    assert starts == sorted(starts)
    assert {e.name for e in session.events} == {"parent", "child"}


def test_flush_writes_while_recording(trace_path: Path) -> None:
    tracebridge.start(output=trace_path)
    try:
        with tracebridge.span("early"):
            pass
        assert tracebridge.flush(timeout=10)
        assert [e.name for e in tracebridge.read(trace_path)] == ["early"]
    finally:
        tracebridge.stop()


def test_memory_cap_counts_drops() -> None:
    tracebridge.configure(max_events=10)
    try:
        session = record(lambda: [tracebridge.instant("i") for _ in range(25)])
    finally:
        tracebridge.configure(max_events=1_000_000)
    assert len(session.events) == 10
    assert session.stats.recorded["instant"] == 10
    assert session.stats.dropped == {"memory_cap": {"instant": 15}}


def test_full_thread_queue_drops_and_counts(lenient: None) -> None:
    tracebridge.configure(thread_buffer=100, flush_interval=30)
    try:
        session = record(lambda: [tracebridge.instant("i") for _ in range(1000)])
    finally:
        tracebridge.configure(thread_buffer=65536, flush_interval=0.1)
    recorded = session.stats.recorded["instant"]
    dropped = session.stats.dropped.get("queue_full", {}).get("instant", 0)
    assert dropped > 0
    assert recorded + dropped == 1000


def test_span_that_straddles_stop_is_counted_not_leaked() -> None:
    tracebridge.start()
    s = tracebridge.span("straddler").__enter__()
    first = tracebridge.stop()
    s.__exit__(None, None, None)
    second = record(lambda: None)
    assert [e.name for e in first.events] == []
    assert second.stats.dropped == {"outside_session": {"span": 1}}
    assert second.events == []


def test_trace_file_respects_umask(trace_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o077)
    try:
        tracebridge.start(output=trace_path)
        tracebridge.stop()
    finally:
        os.umask(old)
    assert stat.S_IMODE(trace_path.stat().st_mode) == 0o600


def _workload() -> None:
    @tracebridge.traced(level=2)
    def plain() -> int:
        return 1

    @tracebridge.traced
    def failing() -> None:
        raise KeyError("k")

    for i in range(3):
        with tracebridge.span("outer", level=2):
            plain()
            with tracebridge.span("with metadata", i=i):
                pass
            with tracebridge.span("validate#rules=12#"):  # TraceMe's encoded form
                pass
            with tracebridge.span("naïve ünïcode"), tracebridge.span("x" * 2000):
                pass
            with tracebridge.span("asked for ids") as s:
                assert s.trace_id
            with tracebridge.span("failed later") as s:
                s.fail(ValueError("v"))
            with pytest.raises(KeyError):
                failing()


def _fields(path: Path) -> list[tuple[object, ...]]:
    """What a file says of each event, but its times and ids (they differ from run to run)."""
    return sorted(
        (
            e.kind, e.name, e.level, repr(sorted(e.metadata.items())), e.error and e.error.type,
            e.trace_id != 0, e.thread_name, e.track, e.overlapping, e.categories,
        )
        for e in tracebridge.read(path)
    )  # fmt: skip


def _both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any, suffix: str = "perfetto-trace"
) -> Any:
    """``run(path)`` with spans queued compact where they may be, then with span objects only; both
    files and what ``run`` returned each time."""
    from tracebridge import _recorder
    from tracebridge._recorder.runtime import RT

    compact, objects = tmp_path / f"compact.{suffix}", tmp_path / f"objects.{suffix}"
    first = run(compact)
    with monkeypatch.context() as m:
        m.setattr(_recorder.lifecycle, "update_compact", lambda: setattr(RT, "compact", False))
        second = run(objects)
    return compact, objects, first, second


@pytest.mark.parametrize("suffix", ["perfetto-trace", "json"])
def test_compact_records_write_what_span_objects_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    from tracebridge._recorder.runtime import RT

    def run(path: Path) -> bool:
        tracebridge.start(level=2, output=path)
        compact = RT.compact
        _workload()
        threads = [threading.Thread(target=_workload, name=f"w{i}") for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        tracebridge.stop()
        return compact

    compact, objects, was_compact, was_not = _both_ways(tmp_path, monkeypatch, run, suffix)
    assert was_compact and not was_not
    assert _fields(compact) == _fields(objects)
    assert len(_fields(objects)) == 3 * 3 * 9


def test_trace_lines_turned_on_mid_session_see_the_same_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spans that ended before configure(log_lines=True) are written as they were recorded (no lines);
    # what ends after it has its lines, with ids.
    import logging

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(f"{record.getMessage()} {getattr(record, 'trace_id', '-')}")  # type: ignore[method-assign]
    trace_logger = logging.getLogger("tracebridge.trace")
    trace_logger.addHandler(handler)
    level = trace_logger.level
    trace_logger.setLevel(logging.INFO)

    def run(path: Path) -> list[str]:
        lines.clear()
        tracebridge.configure(flush_interval=3600.0)
        try:
            tracebridge.start(level=2, output=path)
            with tracebridge.span("before", level=2), tracebridge.span("before inner", level=2):
                pass
            tracebridge.configure(log_lines=True)
            with tracebridge.span("after", level=2), tracebridge.span("after inner", level=2):
                pass
            tracebridge.stop()
        finally:
            tracebridge.configure(log_lines=None, flush_interval=0.1)
        return [re.sub(r"\(\S+\)", "(t)", re.sub(r"[0-9a-f]{32}", "ID", line)) for line in lines]

    try:
        compact, objects, first, second = _both_ways(tmp_path, monkeypatch, run)
    finally:
        trace_logger.removeHandler(handler)
        trace_logger.setLevel(level)
    assert first == second == ["[TRACE] after inner (t) ID", "[TRACE] after (t) ID"]
    assert _fields(compact) == _fields(objects)


def test_sampling_adopted_mid_session_sees_the_same_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PerfettoHandler began the recording; start(sampling=...) adopts it. Spans that ended before are
    # written unsampled; after it, a tail sampler keeps whole traces.
    from tracebridge.logging import PerfettoHandler
    from tracebridge.sampling import TailSampler, TraceIdRatio

    def run(path: Path) -> None:
        handler = PerfettoHandler(path)
        try:
            for _ in range(10):
                with tracebridge.span("outer", level=2), tracebridge.span("inner", level=2):
                    pass
            tracebridge.start(level=2, output=path, sampling=[TailSampler(otherwise=TraceIdRatio(0.5))])
            for _ in range(40):
                with tracebridge.span("later", level=2), tracebridge.span("later inner", level=2):
                    pass
            tracebridge.stop()
        finally:
            handler.close()

    compact, objects, _, _ = _both_ways(tmp_path, monkeypatch, run)
    for path in (compact, objects):
        events = tracebridge.read(path)
        assert [e.name for e in events].count("outer") == 10 == [e.name for e in events].count("inner")
        kept = {e.trace_id for e in events if e.name == "later"}
        inner = [e.trace_id for e in events if e.name == "later inner"]
        assert 0 < len(kept) < 40 and sorted(kept) == sorted(inner)  # whole traces, kept or dropped


def test_which_spans_are_queued_compact(trace_path: Path) -> None:
    from tracebridge._recorder.runtime import RT, thread_state

    tracebridge.configure(flush_interval=3600.0)
    try:
        tracebridge.start(level=2, output=trace_path)
        with tracebridge.span("plain"):
            pass
        with tracebridge.span("with metadata", k=1):
            pass
        queued = list(thread_state().buf)
        assert queued[0][:2] == ("plain", 1) and type(queued[0]) is tuple
        assert isinstance(queued[1], tracebridge.Span)
        tracebridge.configure(log_lines=True)  # trace lines need ids: spans are objects again
        assert not RT.compact
        with tracebridge.span("plain"):
            pass
        assert isinstance(thread_state().buf[-1], tracebridge.Span)
        tracebridge.configure(log_lines=None)
        assert RT.compact
    finally:
        tracebridge.stop()
        tracebridge.configure(flush_interval=0.1)
    assert not RT.compact
    from tracebridge.testing import capture

    with capture():  # in memory: ids for every span
        assert not RT.compact
