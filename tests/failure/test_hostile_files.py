"""Hostile trace files: zip bombs, corrupt lengths, deep nesting, floods of problems. Reading stays
bounded (ReadLimits), every command says what is wrong in one line without a traceback, and merge leaves
nothing half written. The files are the crafted cases of issue 15, scaled down to run in a second."""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
import zlib
from pathlib import Path

import pytest

import tracebridge
from tracebridge import cli
from tracebridge.reading import ReadLimits, TraceReadError, read_trace
from tracebridge.sinks.perfetto import tracebridge_perfetto_pb2 as pb
from tracebridge.sinks.perfetto.schema import frame

MiB = 1 << 20


def _compressed(payload_pieces: list[bytes], repeat: int = 1) -> bytes:
    """One ``compressed_packets`` record whose payload is the pieces, ``repeat`` times (streamed: a
    bomb of any size costs its compressed size to build)."""
    z = zlib.compressobj(9)
    parts = [z.compress(piece) for _ in range(repeat) for piece in payload_pieces]
    parts.append(z.flush())
    return frame(pb.TracePacket(compressed_packets=b"".join(parts)).SerializeToString())


def _instant(ts: int) -> bytes:
    p = pb.TracePacket(timestamp=ts, trusted_packet_sequence_id=1)
    p.track_event.type = 3
    p.track_event.name = "x"
    return frame(p.SerializeToString())


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _one_line_error(err: str, *expected: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for text in expected:
        assert text in lines[0], err


@pytest.fixture
def real(tmp_path: Path) -> Path:
    path = tmp_path / "real.perfetto-trace"
    tracebridge.start(2, path)
    for i in range(300):
        with tracebridge.span("work", i=i):
            tracebridge.instant("tick")
    tracebridge.stop()
    return path


def test_a_bomb_in_one_record_is_refused_within_the_limit_of_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.perfetto-trace"
    path.write_bytes(_compressed([b"\0" * MiB], repeat=64))  # 64 MiB of zeros in 64 KB
    tracemalloc.start()
    try:
        trace = read_trace(path, limits=ReadLimits(max_inflated_packet=MiB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * MiB  # a 1 MiB read buffer, the record inflated to the limit (twice at most): not 64 MiB
    assert trace.fatal and trace.fatal_problem is not None
    assert trace.fatal_problem.code == "read_limit_exceeded"
    assert "--max-inflated-packet" in trace.fatal_problem.message
    with pytest.raises(TraceReadError, match="inflate to more than 1,048,576 bytes"):
        tracebridge.read(path, limits=ReadLimits(max_inflated_packet=MiB))
    for command in ("summary", "validate"):
        code, _, err = _run(command, "--max-inflated-packet", "1MiB", str(path))
        assert code == cli.EXIT_ERROR
        _one_line_error(err, "max-inflated-packet")
    # With the default limits (16 MiB a record) the ratio to the file's size stops it first.
    with pytest.raises(TraceReadError, match="64 times the file's size"):
        tracebridge.read(path)


def test_inflation_over_the_file_is_bounded_by_a_ratio_that_a_flag_raises(tmp_path: Path) -> None:
    path = tmp_path / "empties.perfetto-trace"
    record = _compressed([b"\x0a\x00" * (MiB // 2)], repeat=4)  # 4 MiB of empty packets in ~4 KB
    path.write_bytes(record * 10)
    size = path.stat().st_size
    trace = read_trace(path)
    assert trace.fatal_problem is not None and trace.fatal_problem.code == "read_limit_exceeded"
    assert "--max-inflate-ratio" in trace.fatal_problem.message
    assert trace.packets < 10  # it stopped at the record that went past 64 times the file's size
    code, _, err = _run("validate", str(path))
    assert code == cli.EXIT_ERROR
    _one_line_error(err, "max-inflate-ratio")
    # Raised: 20 million empty packets read (in runs, not one step each), nothing wrong with them.
    generous = ReadLimits(max_inflate_ratio=100_000, max_packets_per_byte=100_000)
    trace = read_trace(path, limits=generous)
    assert not trace.fatal and trace.problems == []
    assert trace.packets == 10 and 40 * MiB > 64 * size
    code, out, _ = _run(
        "validate", "--max-inflate-ratio", "100000", "--max-packets-per-byte", "100000", str(path)
    )
    assert code == 0 and "ok" in out


def test_packets_per_byte_bound_the_work_whatever_the_packets_hold(tmp_path: Path) -> None:
    path = tmp_path / "instants.perfetto-trace"
    path.write_bytes(_compressed([_instant(1000)], repeat=40_000))  # 40,000 instants in ~2 KB
    size = path.stat().st_size
    trace = read_trace(path, limits=ReadLimits(max_inflate_ratio=100_000))
    assert trace.fatal_problem is not None and "--max-packets-per-byte" in trace.fatal_problem.message
    budget = max(1 << 14, 2 * size)
    assert len(trace.events) <= budget < 40_000
    # Within the limits the same file reads whole.
    trace = read_trace(path, limits=ReadLimits(max_inflate_ratio=100_000, max_packets_per_byte=1000))
    assert not trace.fatal and len(trace.events) == 40_000


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"\x0a", "truncated: no complete packet"),
        (b"\x0a" + bytes([0xFF] * 8 + [0x3F]) + b"\0" * 20, "longer than the limit"),  # length 2^62
        (b"", "empty file"),
        (b"\x0a\x03\xff\xff\xff", "malformed packet"),
        (_compressed([b"garbage" * 10])[:-3] + b"\x00\x00\x00", "compressed"),
        (frame(pb.TracePacket(compressed_packets=b"\x78\x9cgarbage").SerializeToString()), "cannot inflate"),
        (
            frame(
                pb.TracePacket(
                    compressed_packets=zlib.compress(_compressed([_instant(1)]))
                ).SerializeToString()
            ),
            "compressed packets inside compressed packets",
        ),
    ],
)
def test_broken_files_fail_every_command_with_one_line(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "broken.perfetto-trace"
    path.write_bytes(content)
    with pytest.raises(TraceReadError, match=why):
        tracebridge.read(path)
    for argv in (["validate"], ["summary"], ["convert", "-o", str(tmp_path / "out.json")]):
        code, _, err = _run(*argv, str(path))
        assert code == cli.EXIT_ERROR, (argv, err)
        _one_line_error(err, why)
    assert not (tmp_path / "out.json").exists()


def test_nesting_past_the_decoders_depth_is_one_line_and_merge_refuses_it(tmp_path: Path, real: Path) -> None:
    p = pb.TracePacket(timestamp=1, trusted_packet_sequence_id=1)
    p.track_event.type = 3
    a = p.track_event.debug_annotations.add(name="d")
    for _ in range(120):
        a = a.dict_entries.add(name="d")
    a.int_value = 1
    nested = tmp_path / "nested.perfetto-trace"
    nested.write_bytes(frame(p.SerializeToString()))
    with pytest.raises(TraceReadError, match="malformed packet"):
        tracebridge.read(nested)
    out = tmp_path / "merged.perfetto-trace"
    code, _, err = _run("merge", str(real), str(nested), "-o", str(out))
    assert code == cli.EXIT_ERROR
    _one_line_error(err, str(nested), "malformed packet")
    assert set(tmp_path.iterdir()) == {nested, real}


def test_merge_of_a_corrupt_compressed_packet_leaves_nothing_behind(tmp_path: Path, real: Path) -> None:
    corrupt = tmp_path / "corrupt.perfetto-trace"
    cut_stream = zlib.compress(_instant(5) * 100)[:-6]  # a complete record, its deflate stream cut short
    corrupt.write_bytes(
        real.read_bytes() + frame(pb.TracePacket(compressed_packets=cut_stream).SerializeToString())
    )
    out = tmp_path / "merged.perfetto-trace"
    code, _, err = _run("merge", str(real), str(corrupt), "-o", str(out))
    assert code == cli.EXIT_ERROR
    _one_line_error(err, "compressed packets end inside their deflate stream")
    assert set(tmp_path.iterdir()) == {real, corrupt}
    # The good part of such a file still summarizes, with one warning line.
    code, out_text, err = _run("summary", str(corrupt))
    assert code == 0 and "work" in out_text
    assert err.splitlines() == [
        f"{corrupt}: warning: unreadable at byte {real.stat().st_size:,}: compressed_packets_invalid: "
        "compressed packets end inside their deflate stream; read what came before"
    ]


def test_json_nested_a_million_deep_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_bytes(b"[" * 1_000_000 + b"]" * 1_000_000)
    cut = tmp_path / "cut.json"
    cut.write_bytes(b'{"traceEvents": [' + b"[" * 100_000)
    for p in (path, cut):
        with pytest.raises(TraceReadError, match="nested too deeply"):
            tracebridge.read(p)
        for command in ("summary", "validate"):
            code, _, err = _run(command, str(p))
            assert code == cli.EXIT_ERROR
            _one_line_error(err, "nested too deeply")


def test_a_hundred_thousand_problems_of_one_kind_are_one_line(tmp_path: Path) -> None:
    d = pb.TracePacket(trusted_packet_sequence_id=1, sequence_flags=1)
    d.track_descriptor.uuid = 5
    packets = [frame(d.SerializeToString())]
    for i in range(100_000):
        e = pb.TracePacket(timestamp=i + 1, trusted_packet_sequence_id=1)
        e.track_event.type = 2
        e.track_event.track_uuid = 5
        packets.append(frame(e.SerializeToString()))
    path = tmp_path / "ends.perfetto-trace"
    path.write_bytes(b"".join(packets))
    code, out, _ = _run("validate", str(path))
    assert code == cli.EXIT_PROBLEMS
    lines = out.splitlines()
    assert lines[0] == (
        f"{path}: misplaced_end_event: slice end on track 5 with no open slice "
        "(first at bytes 11, 23, 35, 47, 59, ...); 100,000 times"
    )
    assert len(lines) == 2 and "Perfetto would show" in lines[1]


def test_limits_are_checked_at_setup() -> None:
    with pytest.raises(ValueError, match="max_inflate_ratio must be a whole number of 1 or more"):
        ReadLimits(max_inflate_ratio=0)
    with pytest.raises(SystemExit) as exited:
        _run("validate", "--max-inflated-packet", "lots", "x")
    assert exited.value.code == 2


def test_what_a_crash_leaves_reads_and_merges(tmp_path: Path, real: Path) -> None:
    """A tail of zeros (the file system's leftover after a crash) is a cut-off trace, not a damaged one;
    a malformed packet in the middle keeps the note about a cut-off tail; gzip-compressed packets
    merge as they read."""
    zeros = tmp_path / "zeros.perfetto-trace"
    zeros.write_bytes(real.read_bytes() + b"\0" * 5000)
    trace = read_trace(zeros)
    assert not trace.fatal and trace.truncated_bytes == 5000 and "zeros" in trace.notes[0]
    assert len(tracebridge.read(zeros)) == len(tracebridge.read(real))
    damaged = tmp_path / "damaged.perfetto-trace"
    damaged.write_bytes(real.read_bytes() + b"\0" * 10 + b"\x01")
    with pytest.raises(TraceReadError, match="unexpected byte 0x00"):
        tracebridge.read(damaged)
    middle = tmp_path / "middle.perfetto-trace"
    middle.write_bytes(_instant(1) + frame(b"\xff") + _instant(3) + _instant(4)[:-1])
    trace = read_trace(middle)
    assert trace.fatal and trace.truncated_bytes == len(_instant(4)) - 1
    code, out, _ = _run("validate", str(middle))
    assert code == cli.EXIT_ERROR and "trace_parser_errors: malformed packet" in out
    import gzip

    gz = tmp_path / "gz.perfetto-trace"
    gz.write_bytes(frame(pb.TracePacket(compressed_packets=gzip.compress(_instant(7))).SerializeToString()))
    merged = tmp_path / "merged.perfetto-trace"
    stale = tmp_path / f".merged.perfetto-trace.{__import__('os').getpid()}.merging"
    stale.write_bytes(b"left by a process that died")
    code, _, err = _run("merge", str(gz), "-o", str(merged))
    assert code == 0, err
    assert [e.name for e in tracebridge.read(merged)] == ["x"] and not stale.exists()


def test_reading_never_allocates_what_a_length_claims(tmp_path: Path) -> None:
    from tracebridge.sinks.perfetto.wire import varint

    path = tmp_path / "claims.perfetto-trace"
    path.write_bytes(_instant(1) + b"\x0a" + varint(250 * MiB) + b"\x08" * (2 * MiB))
    tracemalloc.start()
    try:
        trace = read_trace(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 12 * MiB and trace.truncated_bytes == path.stat().st_size - len(_instant(1))


def test_a_progress_callback_may_cancel_with_its_own_exception(real: Path) -> None:
    class Cancelled(Exception):
        pass

    def progress(done: int, total: int) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        read_trace(real, progress)


def test_convert_writes_its_output_whole_or_not_at_all(tmp_path: Path) -> None:
    source = tmp_path / "pids.json"
    events = [
        {"ph": "X", "name": n, "ts": 1, "dur": 2, "pid": pid, "tid": 1} for n, pid in (("x", 2**80), ("y", 2))
    ]
    source.write_text(json.dumps({"traceEvents": events}))
    out = tmp_path / "out.perfetto-trace"
    code, _, err = _run("convert", str(source), "-o", str(out))
    assert code == cli.EXIT_ERROR and "cannot convert" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pids.json"]


def test_problems_list_each_place_once(tmp_path: Path) -> None:
    inner = b"".join(
        frame(
            pb.TracePacket(
                timestamp=i + 1, trusted_packet_sequence_id=1, track_event={"type": 2, "track_uuid": 9}
            ).SerializeToString()
        )
        for i in range(3)
    )
    path = tmp_path / "one-record.perfetto-trace"
    path.write_bytes(frame(pb.TracePacket(compressed_packets=zlib.compress(inner)).SerializeToString()) * 2)
    (problem,) = read_trace(path).problems
    assert problem.count == 6 and problem.offsets == [0, len(path.read_bytes()) // 2]
