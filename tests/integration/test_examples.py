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
