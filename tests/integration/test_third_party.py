"""Behaviour never changes: toolz's own test suite (installed from PyPI), run with toolz instrumented, gives
the same result for every test as without; the trace it writes is valid and holds toolz's calls."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tracebridge.reading import read_trace

RUNNER = textwrap.dedent(
    """
    import json, sys
    import pytest

    outcomes = {}

    class Collect:
        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                outcomes[report.nodeid + "::" + report.when] = report.outcome

    mode, trace, out = sys.argv[1:4]
    if mode == "instrumented":
        import tracebridge
        from tracebridge.instrument import instrument

        handle = instrument("toolz", exclude=["toolz.tests*", "toolz.sandbox.tests*"])
        tracebridge.start(level=2, output=trace)
    args = ["--pyargs", "toolz", "-q", "-p", "no:cacheprovider", "-c", "pytest.ini", "--rootdir", "."]
    code = pytest.main(args, plugins=[Collect()])
    extra = {}
    if mode == "instrumented":
        session = tracebridge.stop()
        recorded = session.stats.total_recorded
        extra = {"wrapped": handle.wrapped, "modules": handle.modules, "recorded": recorded}
    with open(out, "w") as f:
        json.dump({"code": int(code), "outcomes": outcomes, **extra}, f)
    """
)


def run_suite(tmp: Path, mode: str) -> dict[str, object]:
    (tmp / "pytest.ini").write_text("[pytest]\n")
    out = tmp / f"{mode}.json"
    trace = tmp / "toolz.perfetto-trace"
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, mode, str(trace), str(out)],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_toolz_suite_unchanged_when_instrumented(tmp_path: Path) -> None:
    plain = run_suite(tmp_path, "plain")
    instrumented = run_suite(tmp_path, "instrumented")
    assert plain["code"] == 0 and len(plain["outcomes"]) > 150  # type: ignore[arg-type]
    assert instrumented["code"] == plain["code"]
    assert instrumented["outcomes"] == plain["outcomes"]
    assert instrumented["wrapped"] > 50  # type: ignore[operator]
    assert "toolz.itertoolz" in instrumented["modules"]  # type: ignore[operator]
    trace = read_trace(tmp_path / "toolz.perfetto-trace")
    assert trace.problems == []
    names = {e.name for e in trace.events if e.kind == "span"}
    assert {"toolz.itertoolz.groupby", "toolz.dicttoolz.merge"} <= names
    # Its own, and its pool workers' (toolz's parallel tests fork a Pool, whose traces join this one; a
    # worker that terminate() ended has no stats of its own).
    assert sum(e.pid == trace.pid for e in trace.events) == instrumented["recorded"]
