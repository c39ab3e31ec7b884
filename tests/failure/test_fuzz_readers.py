"""Fuzzing the readers: real traces (Perfetto, compressed or not, and Chrome JSON) and crafted ones,
mutated by hypothesis, inside compressed packets too (a flipped byte in a deflate stream only fails its
checksum; the packets inside are mutated and deflated again). Whatever the bytes, ``read_trace``
returns or raises ``TraceReadError`` (never an internal error), ``read`` the same, and the commands end
with exit 0, 1 or 2 and no traceback; reading never holds more events than the file's packet budget.

The cases run in a child process under a memory cap (an address-space limit) and a time cap (a hang
guard, far above the few seconds they take): a zip bomb or a runaway loop that the limits missed fails
the test instead of the machine. ``TRACEBRIDGE_FUZZ=N`` runs N random cases instead of the fixed ones.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracebridge
from tracebridge import cli
from tracebridge.reading import TraceReadError, read_trace
from tracebridge.sinks.perfetto import tracebridge_perfetto_pb2 as pb
from tracebridge.sinks.perfetto.reader import iter_frames
from tracebridge.sinks.perfetto.schema import frame

MEMORY_CAP = 3 << 30  # bytes of address space for the fuzzing process
HANG_GUARD = 900  # seconds: not a threshold on speed, a bound on a loop that never ends


def _record(path: Path, compress: bool) -> None:
    tracebridge.configure(compress=compress, on_full="block")
    tracebridge.start(3, path)
    try:
        for i in range(40):
            with tracebridge.span(f"job#id={i},user=ann#", size=i * 1.5, tags=["a", "b"]):
                tracebridge.counter("queue", i)
                with tracebridge.span("step", level=3):
                    tracebridge.instant("tick", n=i)
                try:
                    with tracebridge.span("fails"):
                        raise ValueError("boom")
                except ValueError:
                    pass
    finally:
        tracebridge.stop()
        tracebridge.configure(compress=True, on_full="drop")


def _seeds(folder: Path) -> dict[str, bytes]:
    seeds = {}
    for name, compress in (("compressed.perfetto-trace", True), ("plain.perfetto-trace", False)):
        _record(folder / name, compress)
        seeds[name] = (folder / name).read_bytes()
    tracebridge.start(3, folder / "t.json")
    for i in range(20):
        with tracebridge.span("json", i=i, text="x" * i):
            tracebridge.instant("mark")
    tracebridge.stop()
    seeds["t.json"] = (folder / "t.json").read_bytes()
    inner = pb.TracePacket(timestamp=5, trusted_packet_sequence_id=1)
    inner.track_event.type = 3
    z = zlib.compressobj(9)
    bomb = z.compress(frame(inner.SerializeToString()) * 5000) + z.flush()
    seeds["crafted.perfetto-trace"] = frame(pb.TracePacket(compressed_packets=bomb).SerializeToString())
    deep = b"[" * 600 + b"]" * 600
    seeds["deep.json"] = (
        b'{"traceEvents": [{"ph": "i", "name": "x", "ts": 1, "pid": 1, "tid": 1, "args": {"a": '
        + deep
        + b"}}]}"
    )
    seeds["crafted.json"] = (
        b'{"traceEvents": [' + b'{"ph": "X", "ts": 1, "dur": 2, "pid": 1, "tid": 1, "name": "a"},' * 3
    )
    return seeds


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=16))
            continue
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "cut", "inner", "length"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x0A, 0x7F, 0x80, 0xFF, ord("{"), ord("["), ord('"')]))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "repeat":
            n = draw(st.integers(1, 64))
            data[i:i] = data[i : i + n] * draw(st.integers(1, 50))
        elif op == "cut":
            del data[i:]
        elif op == "length":  # a varint of any size where a length may be
            data[i : i + 1] = bytes([0xFF] * draw(st.integers(1, 9)) + [draw(st.integers(0, 0x7F))])
        else:
            data = bytearray(_mutate_inside_compressed(bytes(data), draw))
    return bytes(data)


def _mutate_inside_compressed(data: bytes, draw: st.DrawFn) -> bytes:
    """Mutate the packets inside one ``compressed_packets`` record and deflate them again."""
    records = list(iter_frames(data))
    compressed = []
    for start, end, body in records:
        packet = pb.TracePacket()
        try:
            packet.ParseFromString(bytes(body))
        except Exception:
            continue
        if packet.HasField("compressed_packets"):
            compressed.append((start, end, packet))
    if not compressed:
        return data
    start, end, packet = draw(st.sampled_from(compressed))
    try:
        inner = bytearray(zlib.decompress(packet.compressed_packets))
    except zlib.error:
        return data
    if inner:
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, len(inner) - 1))
            if draw(st.booleans()):
                inner[i] ^= 1 << draw(st.integers(0, 7))
            else:
                inner[i : i + draw(st.integers(1, 8))] = draw(st.binary(max_size=8))
    packet.compressed_packets = zlib.compress(bytes(inner))
    return data[:start] + frame(packet.SerializeToString()) + data[end:]


def _check(path: Path) -> None:
    try:
        trace = read_trace(path)
    except TraceReadError as exc:
        assert "internal error" not in str(exc), exc
        assert "\n" not in str(exc)
    else:
        size = path.stat().st_size
        assert len(trace.events) <= max(1 << 14, 4 * size) + trace.packets
    try:
        tracebridge.read(path)
    except TraceReadError as exc:
        assert "internal error" not in str(exc), exc
    commands = (
        ["validate"],
        ["summary"],
        ["convert", "-o", str(path.with_suffix(".out.json"))],
        ["convert", "-o", str(path.with_suffix(".out.perfetto-trace"))],
        ["merge", "-o", str(path.with_suffix(".merged.perfetto-trace"))],
    )
    for argv in commands:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*argv, str(path)])
        text = err.getvalue()
        assert code in (0, 1, 2), (argv, code, text)
        assert "Traceback" not in text and "internal error" not in text, (argv, text)
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) <= 1 and (code != 2 or errors), (argv, text)


def run(examples: int, seeded: bool) -> None:
    """Fuzz every seed (in this process: the test runs it in a child with the caps)."""
    folder = Path(tempfile.mkdtemp(prefix="tracebridge-fuzz-"))
    seeds = _seeds(folder)
    for name, seed in sorted(seeds.items()):
        _fuzz(folder, name, seed, examples, seeded)
        print(f"{name}: {examples} cases", flush=True)
    shutil.rmtree(folder)  # (kept when a case fails: the failing file is in it)


def _fuzz(folder: Path, name: str, seed: bytes, examples: int, seeded: bool) -> None:
    target = folder / f"fuzzed-{name}"

    @settings(
        max_examples=examples,
        print_blob=False,
        report_multiple_bugs=False,
        derandomize=seeded,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(mutations(seed))
    def case(data: bytes) -> None:
        target.write_bytes(data)
        try:
            _check(target)
        except BaseException as exc:
            kept = folder / f"failed-{len(list(folder.glob('failed-*')))}-{name}"
            kept.write_bytes(data)
            print(f"FAILED {kept}: {type(exc).__name__}: {str(exc)[:2000]}", flush=True)
            raise

    case()


def test_readers_survive_mutated_traces() -> None:
    examples = int(os.environ.get("TRACEBRIDGE_FUZZ", "0"))
    seeded = examples == 0
    code = (
        "import resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_CAP}, {MEMORY_CAP})); "
        f"sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        "import test_fuzz_readers as f; "
        f"f.run({examples or 80}, {seeded})"
    )
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD, env=env
    )
    failures = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert done.returncode == 0 and not failures, "\n".join(failures[:5]) or done.stderr[-4000:]
    assert done.stdout.count("cases") == 6, done.stdout
