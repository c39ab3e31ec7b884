from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tracebridge
from tracebridge.cli import main
from tracebridge.reading import read_trace


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "t.perfetto-trace"
    tracebridge.start(level=2, output=path)
    for i in range(5):
        with tracebridge.span("outer", level=2, i=i), tracebridge.span("inner", level=2):
            pass
    try:
        with tracebridge.span("bad"):
            raise KeyError("missing")
    except KeyError:
        pass
    tracebridge.stop()
    return path


def test_summary_text(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "Top time consumers" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert lines["outer"].split()[1] == "5" and lines["inner"].split()[1] == "5"
    assert "1x bad: KeyError: 'missing'" in out


def test_bad_top_and_what_convert_wrote(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for top in ("0", "-3", "many"):
        with pytest.raises(SystemExit) as exited:
            main(["summary", str(trace), "--top", top])
        assert exited.value.code == 2
        assert "--top: expected a whole number of 1 or more" in capsys.readouterr().err
    assert main(["convert", str(trace), "-o", str(tmp_path / "out.txt")]) == 0
    assert "(Perfetto, 11 events)" in capsys.readouterr().out
    assert main(["convert", str(trace), "-o", str(tmp_path / "out.json")]) == 0
    assert "(Chrome JSON, 11 events)" in capsys.readouterr().out


def test_summary_json(trace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(trace), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ops = {o["name"]: o for o in doc["operations"]}
    assert ops["outer"]["count"] == 5 and ops["bad"]["errors"] == 1
    assert ops["outer"]["self_ns"] + ops["inner"]["total_ns"] == ops["outer"]["total_ns"]
    assert doc["stats"]["recorded"]["span"] == 11


@pytest.mark.parametrize("suffix", [".perfetto-trace", ".json"])
def test_summary_streams_what_a_whole_read_summarizes(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``summary`` reads the trace into a SummaryBuilder (sorted on disk a few hundred records at a
    time): the same summary as ``summarize`` of the whole list of events."""
    import threading

    from tracebridge.analysis import summarize
    from tracebridge.sinks.perfetto import reader

    path = tmp_path / f"t{suffix}"

    def work(k: int) -> None:
        for i in range(300):
            with tracebridge.span("outer", k=k), tracebridge.span(f"inner{i % 3}"):
                tracebridge.instant("tick")
            if i % 50 == 0:
                try:
                    with tracebridge.span("fails"):
                        raise ValueError(f"bad {i % 4}")
                except ValueError:
                    pass

    tracebridge.start(level=2, output=path)
    threads = [threading.Thread(target=work, args=(k,), name=f"w{k}") for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tracebridge.stop()
    monkeypatch.setattr(reader, "RUN_RECORDS", 250)
    assert main(["summary", "--json", str(path)]) == 0
    streamed = json.loads(capsys.readouterr().out)
    whole = read_trace(path)
    assert streamed == json.loads(json.dumps(summarize(whole.events, whole.stats, whole.losses).as_dict()))
    assert streamed["events"]["span"] == 3 * (300 * 2 + 6)


def test_validate(trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(trace)]) == 0
    assert "ok (" in capsys.readouterr().out
    bad = tmp_path / "bad.perfetto-trace"
    # A slice end with nothing open on its track: what trace_processor counts as misplaced_end_event.
    from tracebridge.sinks.perfetto.reader import iter_frames

    from helpers import expand

    data = expand(trace.read_bytes())

    frames = list(iter_frames(data))
    # Drop the first packet that carries a SLICE_BEGIN of "outer": its END is then misplaced.
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as official

    kept = bytearray()
    dropped = False
    for start, end, packet in frames:
        p = official.TracePacket.FromString(bytes(packet))
        if not dropped and p.track_event.type == 1 and not p.interned_data.event_names:
            dropped = True
            continue
        kept += data[start:end]
    assert dropped
    bad.write_bytes(bytes(kept))
    assert main(["validate", str(bad)]) == 1
    assert "misplaced_end_event" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(tmp_path / "nope.perfetto-trace")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00\x01junk")
    assert main(["validate", str(junk)]) == 2
    assert "not a trace" in capsys.readouterr().err
    cut = tmp_path / "cut.json"
    cut.write_text('{"traceEvents": [{"ph": "X"')
    assert main(["convert", str(cut), "-o", str(tmp_path / "o.json")]) == 2
    assert "truncated: no complete event" in capsys.readouterr().err


def test_truncated_perfetto_is_read_with_a_note(
    trace: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.perfetto-trace"
    cut.write_bytes(trace.read_bytes()[:-3])
    assert main(["summary", str(cut)]) == 0
    assert "incomplete packet" in capsys.readouterr().err


def test_module_entry_point_and_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo.perfetto-trace"
    result = subprocess.run(
        [sys.executable, "-m", "tracebridge", "demo", "-o", str(out), "--json", str(tmp_path / "demo.json")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "[TRACE] load_config (" in result.stdout
    assert f"tracebridge open {out}" in result.stdout
    assert main(["validate", str(out), str(tmp_path / "demo.json")]) == 0
    events = tracebridge.read(out)
    kinds = {e.kind for e in events}
    assert kinds == {"span", "instant", "counter", "activity"}
    assert any(e.error is not None for e in events)
    assert any(e.overlapping for e in events) or any(e.name == "fetch" for e in events)


def test_format_detection_is_not_fooled_by_a_leading_newline(tmp_path: Path) -> None:
    from tracebridge.reading import detect_format

    # A Perfetto file is 0x0a (a newline) and a length; a length of 123 is "{" in ASCII.
    from tracebridge.sinks.perfetto.schema import P_TRACK_DESCRIPTOR, TD_NAME, frame

    packet = P_TRACK_DESCRIPTOR.bytes_(TD_NAME.string("x" * 118))
    data = frame(packet)
    assert data[:2] == b"\x0a{"
    pf = tmp_path / "p.perfetto-trace"
    pf.write_bytes(data)
    assert detect_format(pf) == "perfetto"
    js = tmp_path / "j.json"
    js.write_text('\n{"traceEvents": []}')
    assert detect_format(js) == "json"


def test_progress_bar_only_on_a_terminal() -> None:
    import io

    from tracebridge.cli import _Progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = _Progress("reading t", tty)
    for done in (0, 50, 100):
        bar(done, 100)
    assert "50%" in tty.getvalue() and "100%" in tty.getvalue()
    plain = io.StringIO()
    quiet = _Progress("reading t", plain)
    quiet(50, 100)
    assert plain.getvalue() == ""


def _record(path: Path, name: str, threads: int) -> None:
    import threading

    tracebridge.start(level=2, output=path)

    def work(k: int) -> None:
        with tracebridge.span(f"{name}.work", level=2, k=k):
            tracebridge.instant("tick")

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    tracebridge.counter(f"{name}.depth", 3)
    tracebridge.stop()


def test_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second, merged = tmp_path / "first.pt", tmp_path / "second.pt", tmp_path / "m.pt"
    _record(first, "a", 2)
    _record(second, "b", 3)
    # Later trace first on the command line: the merge still keeps the clock snapshots in order.
    assert main(["merge", str(second), str(first), "-o", str(merged)]) == 0
    assert "from 2 traces" in capsys.readouterr().out
    trace = tracebridge.reading.read_trace(merged)
    assert trace.problems == []
    names = sorted(e.name for e in trace.events if e.kind == "span")
    assert names == ["a.work"] * 2 + ["b.work"] * 3
    assert sum(e.kind == "instant" for e in trace.events) == 5
    # Every sequence of both files is its own sequence in the merged one.
    from helpers import decode

    seqs = {p.trusted_packet_sequence_id for p in decode(merged).packet}
    # (the writer's own, the main thread's, one per worker) for each file
    assert seqs == set(range(1, len(seqs) + 1)) and len(seqs) == (2 + 2) + (2 + 3)
    (tmp_path / "not-a-trace").write_text("hello")
    assert main(["merge", str(first), str(tmp_path / "not-a-trace"), "-o", str(tmp_path / "x.pt")]) == 2
    assert "not a Perfetto protobuf trace" in capsys.readouterr().err
