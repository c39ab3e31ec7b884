"""The Perfetto writer, judged by the official schema from the ``perfetto`` package."""

from __future__ import annotations

import os
import threading
import zlib
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._model import ErrorInfo, Event, Frame, Loss, ThreadInfo
from tracebridge.reading import read_trace
from tracebridge.sinks.perfetto import writer as perfetto_writer
from tracebridge.sinks.perfetto.writer import PerfettoWriter

from helpers import comparable, decode, official_view, perfetto_import

ME = ThreadInfo(os.getpid(), 4242, "worker")


def write(path: Path, *batches: list[Event], thread: ThreadInfo = ME, **close: object) -> None:
    w = PerfettoWriter(path, start_ts=1_000)
    for batch in batches:
        w.write(thread, batch)
    w.close(**close)  # type: ignore[arg-type]


def test_file_starts_with_packet_tag_and_has_process_and_clocks(trace_path: Path) -> None:
    write(trace_path)
    data = trace_path.read_bytes()
    assert data[0] == 0x0A
    trace = decode(data)
    proc = [p.track_descriptor for p in trace.packet if p.track_descriptor.HasField("process")]
    assert proc[0].process.pid == os.getpid() and proc[0].uuid
    # The name once, after the first descriptor (trace_processor up to v52 keeps the first name it sees,
    # later versions the last: a source may name the process after the file was begun).
    assert not proc[0].process.HasField("process_name")
    assert [(d.uuid, d.process.process_name) for d in proc[1:]] == [(proc[0].uuid, "pytest")]
    snapshot = next(p.clock_snapshot for p in trace.packet if p.HasField("clock_snapshot"))
    assert {c.clock_id for c in snapshot.clocks} == {1, 3, 6}
    for p in trace.packet:
        assert p.trusted_packet_sequence_id != 0


def test_thread_sequence_layout(trace_path: Path) -> None:
    ev = Event("span", "work", 5_000, 9_000, 1, {}, ME.tid, ME.name)
    write(trace_path, [ev], [Event("instant", "later", 20_000, 20_000, 1, {}, ME.tid, ME.name)])
    trace = decode(trace_path)
    thread_packets = [p for p in trace.packet if p.trusted_packet_sequence_id != 1]
    seqs = {p.trusted_packet_sequence_id for p in thread_packets}
    assert len(seqs) == 1
    first = thread_packets[0]
    assert first.sequence_flags == 1 and first.first_packet_on_sequence
    assert first.track_descriptor.thread.tid == ME.tid
    assert first.track_descriptor.thread.pid == ME.pid
    assert first.track_descriptor.thread.thread_name == "worker"
    assert first.trace_packet_defaults.timestamp_clock_id == 64
    assert first.trace_packet_defaults.track_event_defaults.track_uuid == first.track_descriptor.uuid
    snap = thread_packets[1].clock_snapshot
    incremental = next(c for c in snap.clocks if c.clock_id == 64)
    boot = next(c for c in snap.clocks if c.clock_id == 6)
    assert incremental.is_incremental and incremental.timestamp == boot.timestamp
    # Delta timestamps on clock 64 add up to the events' times; interned before (or with) first use.
    now = incremental.timestamp
    seen_names: set[int] = set()
    times = []
    for p in thread_packets[2:]:
        assert p.sequence_flags == 2
        assert not p.HasField("timestamp_clock_id")
        now += p.timestamp
        times.append(now)
        seen_names.update(n.iid for n in p.interned_data.event_names)
        if p.track_event.HasField("name_iid"):
            assert p.track_event.name_iid in seen_names
    assert times == [5_000, 9_000, 20_000]


def test_out_of_order_event_gets_absolute_timestamp(trace_path: Path) -> None:
    inner = Event("span", "inner", 50_000, 60_000, 1, {}, ME.tid, ME.name)
    outer = Event("span", "outer", 40_000, 70_000, 1, {}, ME.tid, ME.name)
    write(trace_path, [inner], [outer])  # the outer span reaches the writer in a later batch
    view = official_view(trace_path)
    begin_outer = next(e for e in view["events"] if e["name"] == "outer")["packet"]
    assert begin_outer.timestamp_clock_id == 6 and begin_outer.timestamp == 40_000
    names = [(e.name, e.start_ns, e.end_ns) for e in tracebridge.read(trace_path)]
    assert names == [("outer", 40_000, 70_000), ("inner", 50_000, 60_000)]


def test_annotation_types(trace_path: Path) -> None:
    md = {
        "b": True,
        "i": -5,
        "big": (1 << 64) - 1,
        "f": 2.5,
        "s": "text",
        "none": None,
        "nested": {"list": [1, "two", {"deep": False}], "empty": {}, "nothing": []},
    }
    write(trace_path, [Event("instant", "x", 2_000, 2_000, 3, md, ME.tid, ME.name)])
    (ev,) = [e for e in official_view(trace_path)["events"] if e["name"] == "x"]
    a = ev["annotations"]
    assert a["b"].bool_value is True
    assert a["i"].int_value == -5
    assert a["big"].uint_value == (1 << 64) - 1
    assert a["f"].double_value == 2.5
    assert a["s"].string_value == "text"
    assert a["none"].WhichOneof("value") is None  # no value: trace_processor cannot import JSON null
    assert a["tb.level"].int_value == 3
    nested = {d.name: d for d in a["nested"].dict_entries}
    assert [v.int_value for v in nested["list"].array_values[:1]] == [1]
    assert nested["list"].array_values[1].string_value == "two"
    assert nested["list"].array_values[2].dict_entries[0].name == "deep"
    assert nested["empty"].legacy_json_value == "{}"
    (back,) = tracebridge.read(trace_path)
    assert back.metadata == md and back.level == 3


def test_failed_span_has_callstack(trace_path: Path) -> None:
    frames = (Frame("main", "/app/main.py", 10), Frame("load", "/app/io.py", 42))
    err = ErrorInfo("OSError", "disk on fire", frames)
    write(trace_path, [Event("span", "load", 2_000, 3_000, 1, {}, ME.tid, ME.name, err)])
    (begin,) = [e for e in official_view(trace_path)["events"] if e["name"] == "load"]
    te = begin["packet"].track_event
    assert [(f.function_name, f.source_file, f.line_number) for f in te.callstack.frames] == [
        ("main", "/app/main.py", 10),
        ("load", "/app/io.py", 42),
    ]
    assert begin["annotations"]["exception.type"].string_value == "OSError"
    assert begin["annotations"]["exception.message"].string_value == "disk on fire"
    # The back-trace as text too (UIs before v53 do not know the callstack field), read back as the error.
    text = begin["annotations"]["exception.stacktrace"].string_value
    assert text == "  main (/app/main.py:10)\n  load (/app/io.py:42)\nOSError: disk on fire" == err.format()
    (back,) = tracebridge.read(trace_path)
    assert back.error == err and back.metadata == {}


def test_a_long_back_trace_text_keeps_its_end(trace_path: Path) -> None:
    from tracebridge._model import MAX_STACKTRACE_TEXT

    frames = tuple(Frame(f"f{i}", "/app/" + "deep/" * 20 + "m.py", i) for i in range(64))
    err = ErrorInfo("RecursionError", "x" * 20_000, frames)
    write(trace_path, [Event("span", "deep", 2_000, 3_000, 1, {}, ME.tid, ME.name, err)])
    (begin,) = [e for e in official_view(trace_path)["events"] if e["name"] == "deep"]
    text = begin["annotations"]["exception.stacktrace"].string_value
    assert len(text) <= MAX_STACKTRACE_TEXT < len(err.format())
    assert text.startswith("(... ") and text.endswith("x" * 100)
    (back,) = tracebridge.read(trace_path)
    assert back.error == err


def test_counters_categories_flows_and_logs(trace_path: Path) -> None:
    src = Frame("handler", "/app/h.py", 7)
    events = [
        Event("counter", "queue", 2_000, 2_000, 1, {}, ME.tid, ME.name, value=3, unit="count"),
        Event("counter", "temp", 2_500, 2_500, 1, {}, ME.tid, ME.name, value=36.6, unit="celsius"),
        Event(
            "span", "send", 3_000, 4_000, 1, {}, ME.tid, ME.name, categories=("net", "io"), flows=(7, 1 << 63)
        ),
        Event("span", "recv", 5_000, 6_000, 1, {}, ME.tid, ME.name, terminating_flows=(7,)),
        Event(
            "log",
            "user 42 logged in",
            7_000,
            7_000,
            1,
            {"logger": "auth"},
            ME.tid,
            ME.name,
            value=4,
            source=src,
        ),
    ]
    write(trace_path, events)
    view = official_view(trace_path)
    tracks = view["tracks"]
    by_name = {e["name"] or tracks[e["track"]].name: e for e in view["events"]}
    queue = by_name["queue"]
    assert queue["type"] == 4 and queue["packet"].track_event.counter_value == 3
    assert tracks[queue["track"]].counter.unit == 2
    assert tracks[by_name["temp"]["track"]].counter.unit_name == "celsius"
    # Counter descriptors come strictly before their first event.
    order = [p for p in view["trace"].packet]
    desc_index = next(i for i, p in enumerate(order) if p.track_descriptor.uuid == queue["track"])
    event_index = next(i for i, p in enumerate(order) if p is queue["packet"])
    assert desc_index < event_index
    send = by_name["send"]
    assert send["categories"] == ["net", "io"]
    assert list(send["packet"].track_event.flow_ids) == [7, 1 << 63]
    assert list(by_name["recv"]["packet"].track_event.terminating_flow_ids) == [7]
    log_packet = next(e for e in view["events"] if e["packet"].track_event.HasField("log_message"))["packet"]
    lm = log_packet.track_event.log_message
    assert lm.prio == 4
    bodies = {b.iid: b.body for p in view["trace"].packet for b in p.interned_data.log_message_body}
    locations = {s.iid: s for p in view["trace"].packet for s in p.interned_data.source_locations}
    assert bodies[lm.body_iid] == "user 42 logged in"
    loc = locations[lm.source_location_iid]
    assert (loc.file_name, loc.function_name, loc.line_number) == ("/app/h.py", "handler", 7)
    back = {e.name: e for e in tracebridge.read(trace_path)}
    assert back["queue"].value == 3 and back["queue"].unit == "count"
    assert back["temp"].unit == "celsius"
    assert back["user 42 logged in"].kind == "log" and back["user 42 logged in"].source == src


def test_a_loss_clears_the_sequence_and_is_marked(trace_path: Path) -> None:
    w = PerfettoWriter(trace_path, start_ts=1_000)
    w.write(ME, [Event("span", "a", 2_000, 2_500, 1, {}, ME.tid, ME.name)])
    loss = Loss({"queue_full": 1234}, 2_600, 2_900)
    w.write(ME, [Event("span", "a", 3_000, 3_500, 1, {}, ME.tid, ME.name)], loss)
    w.close()
    packets = [p for p in decode(trace_path).packet if p.trusted_packet_sequence_id > 1]
    # The loss is reported on a packet that clears the incremental state (so it invalidates nothing),
    # and the interned name of "a" is written again after it.
    lost = [p for p in packets if p.previous_packet_dropped]
    assert len(lost) == 1 and lost[0].sequence_flags & 1 and lost[0].HasField("trace_packet_defaults")
    after = packets[packets.index(lost[0]) :]
    assert any(n.name == "a" for p in after for n in p.interned_data.event_names)
    imported = perfetto_import(trace_path)
    assert imported.stats == {} and imported.loss_packets == 1
    assert sorted(imported.names()) == ["a", "a", "tracebridge: 1,234 events dropped (queue_full)"]
    back = read_trace(trace_path)
    assert [(e.name, e.start_ns) for e in back.events] == [("a", 2_000), ("a", 3_000)]
    assert [Loss.from_marker(m) for m in back.losses] == [loss]
    assert back.losses[0].thread_id == ME.tid and back.problems == []


def test_named_and_overlapping_tracks_never_cross(trace_path: Path) -> None:
    # Three kernels on "GPU Compute" that overlap pairwise, and two async spans that cross.
    gpu = [
        Event("span", f"k{i}", s, e, 1, {}, ME.tid, ME.name, track="GPU Compute")
        for i, (s, e) in enumerate([(1_000, 5_000), (2_000, 6_000), (3_000, 4_000)])
    ]
    a = Event("span", "a", 10_000, 20_000, 1, {}, ME.tid, ME.name, overlapping=True)
    b = Event("span", "b", 15_000, 30_000, 1, {}, ME.tid, ME.name)
    write(trace_path, [*gpu, a, b])
    view = official_view(trace_path)
    tracks = view["tracks"]
    gpu_tracks = {u for u, t in tracks.items() if t.name == "GPU Compute"}
    assert len(gpu_tracks) == 2  # k0 and k1 cross; k2 nests in k0
    process_uuid = next(u for u, t in tracks.items() if t.HasField("process"))
    assert all(tracks[u].parent_uuid == process_uuid for u in gpu_tracks)
    a_track = next(e["track"] for e in view["events"] if e["name"] == "a")
    b_track = next(e["track"] for e in view["events"] if e["name"] == "b")
    assert a_track != b_track and tracks[b_track].HasField("thread")
    back = {e.name: e for e in tracebridge.read(trace_path)}
    assert back["a"].overlapping and not back["b"].overlapping
    assert back["k1"].track == "GPU Compute"


def test_session_end_to_end(trace_path: Path) -> None:
    tracebridge.start(level=2, output=trace_path)
    with tracebridge.span("outer", level=2, category="io", path="a"):
        t = threading.Thread(target=lambda: tracebridge.instant("from_thread"), name="helper")
        t.start()
        t.join()
    session = tracebridge.stop()
    events = tracebridge.read(trace_path)
    assert [(e.kind, e.name, e.thread_name) for e in events] == [
        ("span", "outer", threading.current_thread().name),
        ("instant", "from_thread", "helper"),
    ]
    view = official_view(trace_path)
    threads = [t for t in view["tracks"].values() if t.HasField("thread")]
    assert sorted(t.thread.thread_name for t in threads) == sorted(
        [threading.current_thread().name, "helper"]
    )
    assert len({t.uuid for t in threads}) == 2
    # The session's stats: a slice from the session's start to its end on a track of its own under the
    # process, named after what it recorded, the stats as its arguments.
    stats, end = [e for e in view["events"] if e["track"] == view["events"][-1]["track"]]
    assert stats["categories"] == ["tracebridge.stats"] and stats["name"] == "tracebridge: 2 events recorded"
    assert stats["annotations"]["recorded"].dict_entries
    assert (stats["type"], end["type"]) == (1, 2)  # SLICE_BEGIN, SLICE_END
    trace = read_trace(trace_path)
    assert trace.session_ns is not None and trace.stats == session.stats
    assert trace.session_ns[0] <= events[0].start_ns and trace.session_ns[1] >= events[-1].start_ns
    track = view["tracks"][stats["track"]]
    assert track.name == "tracebridge" and view["tracks"][track.parent_uuid].HasField("process")
    assert session.stats.recorded["span"] == 1


@pytest.mark.parametrize("ext", [".json", ".perfetto-trace"])
def test_disk_full_is_counted_and_the_file_stays_valid(tmp_path: Path, lenient: None, ext: str) -> None:
    path = tmp_path / f"trace{ext}"
    tracebridge.start(output=path)
    from tracebridge._recorder.runtime import RT

    with tracebridge.span("kept"):
        pass
    tracebridge.flush()
    sink = RT.session._sink  # type: ignore[union-attr]
    real = sink._out.file

    class Full:
        def write(self, data: bytes) -> int:
            real.write(data[: len(data) // 2])  # a partial write, then the error
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> object:
            return getattr(real, name)

    sink._out.file = Full()
    with tracebridge.span("lost"):
        pass
    tracebridge.flush()
    sink._out.file = real
    session = tracebridge.stop()
    assert session.stats.dropped == {"sink_error": {"span": 1}}
    assert session.stats.recorded["span"] == 1
    names = [e.name for e in tracebridge.read(path)]
    assert names == ["kept"]


@pytest.mark.parametrize("compress", [True, False])
def test_compressed_packets(trace_path: Path, compress: bool) -> None:
    events = [
        Event("span", f"op{i % 7}", 10_000 + i * 100, 10_050 + i * 100, 1, {"i": i}, ME.tid, ME.name)
        for i in range(3000)
    ]
    w = PerfettoWriter(trace_path, compress=compress)
    w.write(ME, events)
    w.close()
    raw = decode_raw(trace_path)
    compressed = [p for p in raw.packet if p.HasField("compressed_packets")]
    assert bool(compressed) == compress
    if compress:
        assert all(len(zlib.decompress(p.compressed_packets)) <= 256 * 1024 for p in compressed)
    back = tracebridge.read(trace_path)
    assert [(e.name, e.start_ns, e.end_ns, e.metadata) for e in back] == [
        (e.name, e.start_ns, e.end_ns, e.metadata) for e in events
    ]
    assert len([e for e in official_view(trace_path)["events"] if e["type"] == 1]) == 3000


def decode_raw(path: Path) -> object:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as official

    return official.Trace.FromString(path.read_bytes())


def test_sequence_restart_never_moves_the_clock_back(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(perfetto_writer, "MAX_INTERNED", 20)
    w = PerfettoWriter(trace_path)
    written = []
    for batch in range(5):
        events = [
            Event(
                "span",
                f"name-{batch}-{i}",
                10_000 + batch * 1000 + i * 10,
                10_005 + batch * 1000 + i * 10,
                1,
                {},
                ME.tid,
                ME.name,
            )
            for i in range(30)
        ]
        w.write(ME, events)
        written += events
    outer = Event("span", "outer", 5_000, 20_000, 1, {}, ME.tid, ME.name)
    w.write(ME, [outer])  # begins before every restart of the sequence's clock
    w.close()
    trace = read_trace(trace_path)
    assert trace.problems == []
    assert sorted(map(comparable, trace.events), key=repr) == sorted(
        map(comparable, [*written, outer]), key=repr
    )
    snapshots = [p.clock_snapshot for p in decode(trace_path).packet if p.HasField("clock_snapshot")]
    per_sequence = [next(c.timestamp for c in s.clocks if c.clock_id == 6) for s in snapshots[1:]]
    assert per_sequence == sorted(per_sequence) and len(per_sequence) > 2


def test_equal_timestamps_nest_in_any_arrival_order(tmp_path: Path) -> None:
    parent = Event("span", "parent", 100, 110, 1, {}, ME.tid, ME.name)
    first = Event("span", "first_child", 100, 104, 1, {}, ME.tid, ME.name)
    last = Event("span", "last_child", 106, 110, 1, {}, ME.tid, ME.name)
    for order in ([parent, first, last], [first, last, parent], [last, parent, first]):
        path = tmp_path / "t.perfetto-trace"
        w = PerfettoWriter(path, start_ts=0)
        w.write(ME, list(order))
        w.close()
        trace = read_trace(path)
        assert trace.problems == []
        assert {(e.name, e.start_ns, e.end_ns) for e in trace.events} == {
            ("parent", 100, 110),
            ("first_child", 100, 104),
            ("last_child", 106, 110),
        }


def test_drop_mark_survives_a_failed_write(trace_path: Path) -> None:
    w = PerfettoWriter(trace_path, compress=False)
    real = w._out.file

    class Failing:
        def write(self, data: Any) -> int:
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    w._out.file = Failing()  # type: ignore[assignment]
    with pytest.raises(OSError):
        w.write(ME, [Event("instant", "lost", 2_000, 2_000, 1, {}, ME.tid, ME.name)], Loss({"x": 5}, 1, 1))
    w._out.file = real
    w.write(ME, [Event("instant", "kept", 3_000, 3_000, 1, {}, ME.tid, ME.name)])
    w.close()
    # The failed write is a gap too: the next write clears the sequence and says a packet was lost.
    lost = [p for p in decode(trace_path).packet if p.previous_packet_dropped]
    assert len(lost) == 1 and lost[0].sequence_flags & 1
    assert [e.name for e in read_trace(trace_path).events] == ["kept"]
    assert perfetto_import(trace_path).stats == {}


def test_big_counter_values_and_activity_tracks(trace_path: Path) -> None:
    tracebridge.start(output=trace_path)
    tracebridge.counter("big", (1 << 63) + 5)
    aid = tracebridge.activity_start("upload", track="Network")
    tracebridge.activity_end(aid)
    session = tracebridge.stop()
    events = {e.name: e for e in tracebridge.read(trace_path)}
    assert events["big"].value == float((1 << 63) + 5)
    assert events["upload"].track == "Network" and events["upload"].kind == "activity"
    assert session.stats.recorded == {"span": 0, "instant": 0, "counter": 1, "activity": 1, "log": 0}


def test_the_process_is_named_once_with_its_first_events(trace_path: Path) -> None:
    """A name a source gives before the first events is the only one in the file (trace_processor v52
    keeps the first it sees); a later one follows in another descriptor (later versions and our reader
    take the last)."""
    w = PerfettoWriter(trace_path, start_ts=1_000)
    w.rename_process("checkout")
    w.write(ME, [Event("span", "a", 2_000, 3_000, 1, {}, ME.tid, ME.name)])
    w.rename_process("checkout-v2")
    w.write(ME, [Event("span", "b", 4_000, 5_000, 1, {}, ME.tid, ME.name)])
    w.close()
    trace = decode(trace_path)
    named = [
        p.track_descriptor.process.process_name
        for p in trace.packet
        if p.track_descriptor.HasField("process")
    ]
    assert named == ["", "checkout", "checkout-v2"]
    assert imported_process_names(trace_path) == ["checkout"]  # what trace_processor v52 shows
    assert read_trace(trace_path).process_name == "checkout-v2"


def imported_process_names(path: Path) -> list[str]:
    """trace_processor v52's rule (SetProcessNameIfUnset): the first name a process is given stays."""
    names: dict[int, str] = {}
    for p in decode(path).packet:
        d = p.track_descriptor
        if d.HasField("process") and d.process.process_name:
            names.setdefault(d.process.pid, d.process.process_name)
    return list(names.values())


def test_a_failed_write_that_carried_the_process_name_writes_it_again(
    trace_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = PerfettoWriter(trace_path, start_ts=1_000)
    real = w._out.append

    def full(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(w._out, "append", full)
    with pytest.raises(OSError):
        w.write(ME, [Event("span", "lost", 2_000, 3_000, 1, {}, ME.tid, ME.name)])
    monkeypatch.setattr(w._out, "append", real)
    w.write(ME, [Event("span", "kept", 4_000, 5_000, 1, {}, ME.tid, ME.name)])
    w.close()
    descriptors = [
        p.track_descriptor for p in decode(trace_path).packet if p.track_descriptor.HasField("process")
    ]
    assert [d.process.process_name for d in descriptors] == ["", "pytest"]
    assert imported_process_names(trace_path) == ["pytest"]


def test_the_stats_of_merged_and_cut_off_traces(tmp_path: Path) -> None:
    """A merged trace holds a stats slice per process: their stats add up and the session spans them all.
    A file cut off before its session's end still reads, the session ending at its last event. Stats
    that do not read are a problem, not an exception."""
    from tracebridge._model import Stats
    from tracebridge.sinks.perfetto.merge import merge_traces
    from tracebridge.sinks.perfetto.reader import iter_frames, read_perfetto_bytes

    paths = []
    for pid, recorded, lost in ((101, 10, 500), (202, 20, 0)):
        path = tmp_path / f"p{pid}.perfetto-trace"
        paths.append(path)
        w = PerfettoWriter(
            path, pid=pid, start_ts=pid * 10**6, end_ts=pid * 10**6 + 5 * 10**6, compress=False
        )
        w.write(ThreadInfo(pid, pid, "main"), [Event("span", "s", pid * 10**6 + 10, pid * 10**6 + 20)])
        stats = Stats(recorded={"span": recorded})
        if lost:
            stats.count_drop("queue_full", "span", lost)
        w.close(stats)
    merge_traces(paths, tmp_path / "merged.perfetto-trace")
    merged = read_trace(tmp_path / "merged.perfetto-trace")
    assert merged.problems == [] and merged.stats is not None
    assert merged.stats.headline() == "tracebridge: 30 events recorded, 500 lost (queue_full)"
    assert merged.session_ns == (101 * 10**6, 207 * 10**6)

    data = paths[0].read_bytes()
    *_, (last_at, _, _) = iter_frames(data)
    cut = read_perfetto_bytes(data[:last_at])  # (without the session slice's END)
    assert cut.problems == [] and cut.session_ns == (101 * 10**6, 101 * 10**6 + 20)
    assert any("session" in note for note in cut.notes)

    class Unreadable(Stats):
        def as_dict(self) -> dict[str, Any]:
            return {"recorded": "abc"}

    w = PerfettoWriter(tmp_path / "bad.perfetto-trace")
    w.close(Unreadable())
    bad = read_trace(tmp_path / "bad.perfetto-trace")
    assert bad.stats is None and [p.code for p in bad.problems] == ["track_event_parser_errors"]


@pytest.mark.parametrize("compress", [True, False])
def test_appending_processes_as_they_are_or_renumbered(tmp_path: Path, compress: bool) -> None:
    """A child's file numbered from a range of its own is appended as it is (a clock snapshot that would
    go back in time left out); one numbered from 1 is renumbered. Either way every sequence is one
    process's, and the importer skips nothing."""
    from tracebridge.sinks.perfetto.merge import append_processes

    def write(path: Path, pid: int, start: int, first_sequence: int) -> Path:
        w = PerfettoWriter(path, pid=pid, start_ts=start, compress=compress, first_sequence=first_sequence)
        for tid in (pid, pid + 1):
            spans = [Event("span", f"s{pid}", start + 10 * i, start + 10 * i + 5) for i in range(300)]
            w.write(ThreadInfo(pid, tid, "t"), spans)
        w.close(tracebridge.Stats(recorded={"span": 600}))
        return path

    range_size = 1 << 20
    # (Writers take a clock snapshot as they are made: "older" began before the parent.)
    older = write(tmp_path / "o.perfetto-trace", 500, 5 * 10**9, 3 * range_size)
    parent = write(tmp_path / "parent.perfetto-trace", 100, 10**9, 1)
    first = write(tmp_path / "a.perfetto-trace", 200, 3 * 10**9, 2 * range_size)
    second = write(tmp_path / "b.perfetto-trace", 300, 2 * 10**9, range_size)
    plain = write(tmp_path / "c.perfetto-trace", 400, 4 * 10**9, 1)
    as_they_were = {p: p.read_bytes() for p in (first, second, older)}
    next_id, _ = append_processes(parent, [second, older, plain, first], None, None, range_size)
    data = parent.read_bytes()
    assert data.index(as_they_were[first]) < data.index(as_they_were[second])  # as they began, as they are
    assert as_they_were[older] not in data  # (its snapshot, older than the parent's, is left out)
    assert next_id == 7  # the renumbered one took 4..6 after the parent's 1..3 (its own and two threads)
    trace = decode(parent)
    pid_of: dict[int, set[int]] = {}
    for p in trace.packet:
        d = p.track_descriptor
        if p.HasField("track_descriptor") and (d.HasField("process") or d.HasField("thread")):
            pid = d.process.pid if d.HasField("process") else d.thread.pid
            pid_of.setdefault(p.trusted_packet_sequence_id, set()).add(pid)
    assert all(len(pids) == 1 for pids in pid_of.values()), pid_of
    assert {next(iter(v)) for v in pid_of.values()} == {100, 200, 300, 400, 500}
    snaps = [
        c.timestamp for p in trace.packet if p.HasField("clock_snapshot")
        for c in p.clock_snapshot.clocks if c.clock_id == 6 and len(p.clock_snapshot.clocks) == 3
    ]  # fmt: skip
    assert snaps == sorted(snaps)
    assert perfetto_import(parent).stats == {}
    read = read_trace(parent)
    assert read.problems == [] and len(read.events) == 3000
    assert set(read.processes) == {100, 200, 300, 400, 500}
