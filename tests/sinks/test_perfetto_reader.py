"""Reading Perfetto traces back: round trips, truncation, and the import problems validate reports."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tracebridge
from tracebridge._model import Event, Loss, ThreadInfo, TraceReadError
from tracebridge.reading import feed, read_trace
from tracebridge.sinks.perfetto import external_sort, reader
from tracebridge.sinks.perfetto.reader import iter_frames, read_perfetto_bytes
from tracebridge.sinks.perfetto.writer import PerfettoWriter

from helpers import assert_same_events, comparable, decode, perfetto_import
from strategies import thread_events

PID = os.getpid()


def _sorted(events: list[Event]) -> list[tuple[object, ...]]:
    return sorted((comparable(e) for e in events), key=repr)


@st.composite
def batches(draw: st.DrawFn) -> list[tuple[ThreadInfo, list[Event]]]:
    out = []
    for i in range(draw(st.integers(1, 3))):
        thread = ThreadInfo(PID, 1000 + i, draw(st.text(max_size=10)))
        events = draw(thread_events(thread.tid, thread.name, draw(st.integers(10_000, 10**12))))
        cut = draw(st.integers(0, len(events)))
        out.append((thread, events[:cut]))
        out.append((thread, events[cut:]))
    return out


@given(batches())
def test_round_trip_through_official_schema_and_read(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("rt") / "t.perfetto-trace"
    w = PerfettoWriter(path)
    written: list[Event] = []
    for thread, events in data:
        w.write(thread, events)
        written.extend(events)
    w.close()
    decode(path)  # the official schema parses every packet
    trace = read_trace(path)
    assert trace.problems == []
    assert_same_events(trace.events, written)


def test_truncation_at_every_offset_of_the_last_packets(trace_path: Path) -> None:
    tracebridge.start(output=trace_path)
    with tracebridge.span("a", k=1):
        tracebridge.instant("i")
    with tracebridge.span("b"):
        pass
    tracebridge.stop()
    data = trace_path.read_bytes()
    frames = list(iter_frames(data))
    boundaries = [end for _, end, _ in frames]
    last_complete_events = {}
    for cut in range(boundaries[-6], len(data) + 1):
        complete = [end for end in boundaries if end <= cut]
        trace = read_perfetto_bytes(data[:cut])
        assert trace.problems == [], (cut, trace.problems)
        assert trace.packets == len(complete)
        assert trace.truncated_bytes == cut - complete[-1]
        full = read_perfetto_bytes(data[: complete[-1]])
        assert [comparable(e) for e in trace.events] == [comparable(e) for e in full.events]
        last_complete_events[complete[-1]] = len(full.events)
    assert len(set(last_complete_events)) >= 5


def _packet(**fields: object) -> bytes:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as official

    t = official.Trace()
    p = t.packet.add()
    for key, value in fields.items():
        target = p
        *path, leaf = key.split("__")
        for part in path:
            target = getattr(target, part)
        if isinstance(value, list):
            getattr(target, leaf).extend(value)
        else:
            setattr(target, leaf, value)
    return t.SerializeToString()


def _codes(data: bytes) -> list[str]:
    return [p.code for p in read_perfetto_bytes(data).problems]


def test_validator_finds_import_problems() -> None:
    thread = _packet(
        trusted_packet_sequence_id=2,
        sequence_flags=1,
        track_descriptor__uuid=5,
        track_descriptor__thread__pid=1,
        track_descriptor__thread__tid=2,
    )
    assert _codes(thread) == []
    assert _codes(_packet(timestamp=5, track_event__type=3, track_event__name="x")) == [
        "track_event_missing_sequence_id"
    ]
    assert _codes(
        _packet(trusted_packet_sequence_id=3, sequence_flags=2, timestamp=5, track_event__type=3)
    ) == ["packet_skipped_seq_needs_incremental_state_invalid"]
    end_alone = _packet(
        trusted_packet_sequence_id=2, timestamp=9, track_event__type=2, track_event__track_uuid=5
    )
    assert _codes(thread + end_alone) == ["misplaced_end_event"]
    assert _codes(_packet(track_descriptor__name="no uuid", trusted_packet_sequence_id=1)) == [
        "track_descriptor_missing_uuid"
    ]
    assert _codes(
        _packet(trusted_packet_sequence_id=1, track_descriptor__uuid=7, track_descriptor__thread__pid=1)
    ) == ["track_descriptor_thread_missing_pid_tid"]
    counter_on_thread = _packet(
        trusted_packet_sequence_id=2,
        timestamp=9,
        track_event__type=4,
        track_event__track_uuid=5,
        track_event__counter_value=1,
    )
    assert _codes(thread + counter_on_thread) == ["track_event_counter_invalid_track_uuid"]
    unknown_track = _packet(
        trusted_packet_sequence_id=2, timestamp=9, track_event__type=3, track_event__track_uuid=77
    )
    assert _codes(thread + unknown_track) == ["track_event_parser_errors"]
    flow_end = _packet(
        trusted_packet_sequence_id=2,
        timestamp=9,
        track_event__type=3,
        track_event__track_uuid=5,
        track_event__terminating_flow_ids=[99],
    )
    assert _codes(thread + flow_end) == ["flow_end_without_start"]
    incremental_without_snapshot = _packet(
        trusted_packet_sequence_id=2,
        timestamp=9,
        timestamp_clock_id=64,
        track_event__type=3,
        track_event__track_uuid=5,
    )
    assert _codes(thread + incremental_without_snapshot) == ["clock_sync_failure"]
    missing_name = _packet(
        trusted_packet_sequence_id=2,
        timestamp=9,
        sequence_flags=2,
        track_event__type=3,
        track_event__track_uuid=5,
        track_event__name_iid=3,
    )
    assert _codes(thread + missing_name) == ["track_event_parser_errors"]
    conflicting = _packet(
        trusted_packet_sequence_id=1, track_descriptor__uuid=5, track_descriptor__name="other"
    )
    assert _codes(thread + conflicting) == ["track_descriptor_conflicting_reservation"]


def test_not_a_trace_and_malformed_packets() -> None:
    trace = read_perfetto_bytes(b"\x12\x00garbage")
    assert trace.fatal and trace.problems[0].code == "not_a_trace"
    malformed = b"\x0a\x03\xff\xff\xff"  # a complete record whose bytes are not a TracePacket
    trace = read_perfetto_bytes(malformed)
    assert trace.fatal and trace.problems[0].code == "trace_parser_errors"


def _sequence_with_a_loss(clear_after_loss: bool, intern_after_loss: bool = True) -> bytes:
    """A thread's sequence: a slice, then a packet after a loss, then another slice (named by iid)."""
    desc = _packet(
        trusted_packet_sequence_id=2,
        sequence_flags=1,
        track_descriptor__uuid=5,
        track_descriptor__thread__pid=1,
        track_descriptor__thread__tid=2,
        trace_packet_defaults__track_event_defaults__track_uuid=5,
        interned_data__event_names=[_name(1, "work")],
    )

    def event(ts: int, kind: int, **extra: object) -> bytes:
        fields: dict[str, object] = {"trusted_packet_sequence_id": 2, "sequence_flags": 2, "timestamp": ts}
        fields["track_event__type"] = kind
        if kind == 1:
            fields["track_event__name_iid"] = 1
        fields.update(extra)
        return _packet(**fields)

    after: dict[str, object] = {"previous_packet_dropped": 1}
    if clear_after_loss:
        after.update(sequence_flags=1, trace_packet_defaults__track_event_defaults__track_uuid=5)
    if intern_after_loss:
        after["interned_data__event_names"] = [_name(1, "work")]
    restart = _packet(
        trusted_packet_sequence_id=2,
        timestamp=20,
        track_event__type=3,
        track_event__name="restart",
        **after,  # type: ignore[arg-type]
    )
    return (
        desc
        + event(10, 1)
        + event(11, 2)
        + restart
        + event(30, 1)
        + event(31, 2)
        + event(40, 1)
        + event(41, 2)
    )


def _name(iid: int, name: str) -> object:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as official

    return official.EventName(iid=iid, name=name)


def test_validate_applies_the_importers_loss_rule() -> None:
    # The loss is reported on a packet that does not clear the state: every later packet that needs
    # interned data is skipped (two slices: their BEGINs and ENDs).
    poisoned = read_perfetto_bytes(_sequence_with_a_loss(clear_after_loss=False))
    problems = {p.code: p for p in poisoned.problems}
    skipped = problems["packet_skipped_seq_needs_incremental_state_invalid"]
    assert skipped.count == 4 and skipped.events == 2
    assert "lost packets" in skipped.message
    assert "interned_data_skipped_incremental_state_invalid" in problems
    assert (poisoned.shown_events, poisoned.file_events) == (2, 4)
    assert [e.name for e in poisoned.events] == ["work", "restart"]
    # (The independent reading of the same rules, on the official schema, agrees.)
    assert perfetto_import(_sequence_with_a_loss(clear_after_loss=False)).stats == {
        "packet_skipped_seq_needs_incremental_state_invalid": 4,
        "interned_data_skipped_incremental_state_invalid": 1,
    }
    assert perfetto_import(_sequence_with_a_loss(clear_after_loss=True)).stats == {}

    # The same loss on a packet that clears the state and interns again: everything is shown.
    healthy = read_perfetto_bytes(_sequence_with_a_loss(clear_after_loss=True))
    assert healthy.problems == []
    assert (healthy.shown_events, healthy.file_events) == (4, 4)
    assert [e.name for e in healthy.events] == ["work", "restart", "work", "work"]

    # Cleared, but the name is not interned again: the iid is unknown in the new generation.
    unnamed = read_perfetto_bytes(_sequence_with_a_loss(clear_after_loss=True, intern_after_loss=False))
    assert [p.code for p in unnamed.problems] == ["track_event_parser_errors"]
    assert unnamed.problems[0].count == 2


def test_validate_cli_says_what_perfetto_would_show(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from tracebridge.cli import main

    bad = tmp_path / "bad.perfetto-trace"
    bad.write_bytes(_sequence_with_a_loss(clear_after_loss=False))
    good = tmp_path / "good.perfetto-trace"
    good.write_bytes(_sequence_with_a_loss(clear_after_loss=True))
    assert main(["validate", str(good)]) == 0
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{good}: ok (8 packets, 4 events)" in out
    assert "packet_skipped_seq_needs_incremental_state_invalid" in out and "4 times; hides 2 events" in out
    assert f"{bad}: Perfetto would show 2 of 4 events" in out


@given(batches(), st.lists(st.booleans(), min_size=6, max_size=6))
def test_losses_between_any_batches_hide_nothing(tmp_path_factory, data, lost) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("loss") / "t.perfetto-trace"
    w = PerfettoWriter(path)
    written: list[Event] = []
    marked = []
    for (thread, events), loss_before in zip(data, lost):  # noqa: B905 (fewer batches than flags)
        loss = None
        if loss_before:
            at = events[0].start_ns if events else 5_000
            loss = Loss({"queue_full": len(written) + 1}, at, at + 10)
            marked.append(loss)
        w.write(thread, events, loss)
        written.extend(events)
    w.close()
    imported = perfetto_import(path)
    assert imported.stats == {}
    assert imported.loss_packets == len(marked)
    trace = read_trace(path)
    assert trace.problems == []
    assert_same_events(trace.events, written)
    assert sorted(map(repr, map(Loss.from_marker, trace.losses))) == sorted(map(repr, marked))
    assert trace.shown_events == trace.file_events == len(written)


class _Collect:
    """An event sink that keeps what it is given."""

    def __init__(self) -> None:
        self.got: list[tuple[Event, int | None, int, int]] = []

    def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None:
        self.got.append((ev, self_ns, depth, covered_ns))


def _nesting(got: list[tuple[Event, int | None, int, int]]) -> list[tuple[object, ...]]:
    """Thread-track spans as (event, self time, depth, children's time): what summary's self and busy
    times come from."""
    return sorted(
        (
            (comparable(e), *rest)
            for e, *rest in got
            if e.kind == "span" and not e.track and not e.overlapping
        ),
        key=repr,
    )


@settings(deadline=None)
@given(batches(), st.integers(1, 12))
def test_streamed_read_gives_what_a_whole_read_gives(tmp_path_factory, data, run) -> None:  # type: ignore[no-untyped-def]
    """A trace read into a sink, its records sorted on disk a few at a time, gives the events (and the
    counts and problems) of a whole read; each slice with the self time and depth its nesting gives."""
    path = tmp_path_factory.mktemp("stream") / "t.perfetto-trace"
    w = PerfettoWriter(path)
    for thread, events in data:
        w.write(thread, events)
    w.close()
    whole = read_trace(path)
    sink = _Collect()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reader, "RUN_RECORDS", run)
        mp.setattr(external_sort, "CHUNK", 2)
        mp.setattr(external_sort, "FAN_IN", 3)
        streamed = read_trace(path, sink=sink)
    assert streamed.events == []
    assert_same_events([e for e, *_ in sink.got], whole.events)
    assert (streamed.shown_events, streamed.file_events, streamed.problems, streamed.notes) == (
        whole.shown_events,
        whole.file_events,
        whole.problems,
        whole.notes,
    )
    assert streamed.shown_events == len(whole.events)
    listed = _Collect()
    feed(whole.events, listed)
    assert _nesting(sink.got) == _nesting(listed.got)


def _spans_trace(path: Path, n: int) -> None:
    w = PerfettoWriter(path)
    for k in range(4):
        thread = ThreadInfo(PID, 500 + k, f"w{k}")
        t = 1_000_000 * (k + 1)
        events = []
        for i in range(n // 4):
            events.append(
                Event("span", "inner", t + 10, t + 20 + i % 7, 2, {"i": i}, thread.tid, thread.name)
            )
            events.append(Event("span", "outer", t, t + 40, 2, {}, thread.tid, thread.name))
            t += 50
        w.write(thread, events)
    w.close()


def test_a_streamed_read_holds_memory_bounded_whatever_the_size(tmp_path: Path) -> None:
    """Memory while streaming does not grow with the trace (a whole read's grows with its events)."""
    import tracemalloc

    def peak(path: Path, sink: _Count | None) -> int:
        tracemalloc.start()
        try:
            read_trace(path, sink=sink)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = tmp_path / "small.perfetto-trace", tmp_path / "large.perfetto-trace"
    _spans_trace(small, 1_000)
    _spans_trace(large, 4_000)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reader, "RUN_RECORDS", 200)
        mp.setattr(external_sort, "CHUNK", 50)
        mp.setattr(external_sort, "FAN_IN", 4)
        streamed = peak(small, _Count()), peak(large, _Count())
    whole = peak(small, None), peak(large, None)
    assert (
        whole[1] > 2.5 * whole[0]
    )  # (the check below means something: memory here is the events; 2.5 and 7.0 MB)
    assert streamed[1] < 1.25 * streamed[0], (streamed, whole)  # (measured: 1.14 and 1.10 MB)
    assert streamed[1] < whole[1] / 4  # (7.0 MB)


class _Count:
    def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None:
        pass


def test_a_sinks_own_error_and_a_failing_temporary_folder_are_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.perfetto-trace"
    _spans_trace(path, 400)

    class Cancel(Exception):
        pass

    class Cancelling:
        def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None:
            raise Cancel

    with pytest.raises(Cancel):  # (the caller's, as it raised it: not "internal error ... please report it")
        read_trace(path, sink=Cancelling())
    monkeypatch.setattr(reader, "RUN_RECORDS", 50)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(TraceReadError, match="cannot sort the trace's events in temporary files") as info:
        read_trace(path, sink=_Count())
    assert str(path) not in str(info.value)  # (the trace itself is fine)
