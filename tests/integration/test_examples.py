"""The examples run as a user would run them and write valid traces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tracebridge.reading import read_trace

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart(tmp_path: Path) -> None:
    out = tmp_path / "qs.perfetto-trace"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "password=[scrubbed]" in result.stdout and "hunter2" not in result.stdout
    trace = read_trace(out)
    assert trace.problems == []
    names = {e.name for e in trace.events}
    assert {"main", "load_config", "read", "task", "connect"} <= names
    assert b"hunter2" not in out.read_bytes()


def run_example(name: str, out: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def test_logging_dictconfig(tmp_path: Path) -> None:
    out = tmp_path / "app.perfetto-trace"
    lines = run_example("logging_dictconfig.py", out)
    assert lines[0].endswith("[/] outside any span: empty ids")
    floods = [line for line in lines if "inventory service" in line]
    assert len(floods) == 4 and floods[-1].endswith(
        "suppressed 17 similar records (inventory service slow to answer)"
    )
    slow = [line for line in lines if "[SLOW]" in line]
    assert len(slow) == 1 and slow[0].startswith("WARNING tracebridge.trace") and "id=2}" in slow[0]
    assert sum("[TRACE] load_order" in line for line in lines) == 3
    trace = read_trace(out)
    assert trace.problems == []
    logs = [e for e in trace.events if e.kind == "log"]
    assert len(logs) == 1 + 3 + 20  # the Perfetto handler has no rate limit in this configuration
    assert {e.name for e in trace.events if e.kind == "span"} == {"handle_request", "load_order", "db.query"}


def test_structlog_example(tmp_path: Path) -> None:
    out = tmp_path / "s.perfetto-trace"
    lines = run_example("structlog_example.py", out)
    assert lines[0] == "[INFO] starting {service=payments}"
    assert lines[2].startswith("[ERROR] charge failed {service=payments, amount=250, trace_id=")
    assert lines[3:7] and lines[
        lines.index("ValueError: amount 250 is over the card's limit") - 1
    ].startswith("  charge (")
    assert sum(line.startswith("[WARNING] retrying") for line in lines) == 2
    trace = read_trace(out)
    assert trace.problems == []
    failed = {e.name: e.error for e in trace.events if e.kind == "span" and e.error is not None}
    # "charge" raised; "checkout" handled it and logged it with log.exception.
    assert set(failed) == {"charge", "checkout"}
    assert all(error.type == "ValueError" for error in failed.values())


def test_exception_in_span(tmp_path: Path) -> None:
    out = tmp_path / "f.perfetto-trace"
    lines = run_example("exception_in_span.py", out)
    assert lines[0] == "ERROR import_invoice invoice 1 is not valid JSON; skipped"
    failed = next(i for i, line in enumerate(lines) if "failed: JSONDecodeError" in line)
    assert lines[failed].startswith("ERROR import_invoice [TRACE] import_invoice (")
    # The record keeps Python's traceback; the trace line has the span's compact back-trace (outermost
    # frame first): the same frames in both.
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[lines.index("Traceback (most recent call last):") + 1].endswith(", in import_invoices")
    assert [line.split(" (")[0].strip() for line in lines[failed + 1 : failed + 5]] == [
        "<module>",
        "main",
        "import_invoices",
        "parse_invoice",
    ]
    assert lines[-1] == "2 of 3 invoices imported"
    trace = read_trace(out)
    spans = [e for e in trace.events if e.kind == "span"]
    assert [e.error is not None for e in spans] == [False, True, False]
    assert spans[1].error is not None and spans[1].error.frames[-1].function == "raw_decode"
    (record,) = [e for e in trace.events if e.kind == "log"]
    assert spans[1].start_ns <= record.start_ns <= spans[1].end_ns


def test_otel_to_perfetto(tmp_path: Path) -> None:
    out = tmp_path / "otel.perfetto-trace"
    lines = run_example("otel_to_perfetto.py", out)
    cart = next(line for line in lines if "cart has 3 items" in line)
    trace_id = cart.split("[")[1].split("]")[0]
    assert any(line.startswith(f"ERROR [{trace_id}] tracebridge.trace: [TRACE] charge (") for line in lines)
    assert any(f"[{trace_id}] tracebridge.trace: [TRACE] validate_cart" in line for line in lines)
    trace = read_trace(out)
    assert trace.problems == [] and trace.process_name == "checkout"
    spans = {e.name: e for e in trace.events if e.kind == "span"}
    assert {"POST /checkout", "validate_cart", "charge", "send_receipt"} <= set(spans)
    assert spans["validate_cart"].trace_id == spans["POST /checkout"].trace_id  # one trace
    assert spans["charge"].error is not None and spans["charge"].error.type == "TimeoutError"
    request_id = spans["POST /checkout"].flows[0]
    assert request_id in spans["send_receipt"].flows  # the link
    assert [e.name for e in trace.events if e.kind == "log"] == ["cart has 3 items", "receipt queued"]
