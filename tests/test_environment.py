"""Configuration without code: ``TRACEBRIDGE_OUTPUT``, ``_LEVEL``, ``_SAMPLING``, ``_LOG_LINES``,
``_RUNTIME`` (and ``_FILTER``) for what ``start()`` is not told, and for ``tracebridge run``; a bad value is
one line that names the variable, and nothing is recorded rather than the program failing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge._environment import EnvironmentSettingError, from_environment, parse_sampling
from tracebridge.sampling import Adaptive, ParentBased, Probability, RateLimiter


def test_the_sampling_grammar() -> None:
    stages = parse_sampling(" ratio:0.1, probability:0.5 ,adaptive:50,ratelimit:100 ")
    assert [type(s) for s in stages] == [ParentBased, Probability, Adaptive, RateLimiter]
    assert parse_sampling("") == []
    for bad, why in (
        ("ratio", "is not one of ratio:P"),
        ("eval:1", "is not one of ratio:P"),
        ("ratio:lots", "'lots' is not a number"),
        ("ratio:2", "ratio:2"),
        ("ratelimit:-1", "ratelimit:-1"),
    ):
        with pytest.raises(EnvironmentSettingError, match=why) as raised:
            parse_sampling(bad)
        assert str(raised.value).startswith("TRACEBRIDGE_SAMPLING: ")


@pytest.mark.parametrize(
    ("variable", "value", "why"),
    [
        ("TRACEBRIDGE_LEVEL", "loud", "'loud' is not a whole number"),
        ("TRACEBRIDGE_LEVEL", "0", "is not a level"),
        ("TRACEBRIDGE_LOG_LINES", "maybe", "is not one of"),
        ("TRACEBRIDGE_RUNTIME", "lots", "'lots' is not one of 1, true"),
        ("TRACEBRIDGE_SAMPLING", "ratio:x", "not a number"),
        ("TRACEBRIDGE_FILTER", "db=loud", ""),
    ],
)
def test_a_bad_value_is_one_line_and_nothing_is_recorded(
    variable: str, value: str, why: str, monkeypatch: Any, capsys: Any, tmp_path: Path
) -> None:
    with pytest.raises(EnvironmentSettingError, match=f"^{variable}: .*{why}"):
        from_environment({variable: value})
    monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TRACEBRIDGE_OUTPUT", str(tmp_path / "never.perfetto-trace"))
    session = tracebridge.start()  # (does not raise: the program goes on)
    with tracebridge.span("work"):
        pass
    tracebridge.stop()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"tracebridge: {variable}: ") and line.endswith("; tracebridge records nothing")
    assert session.format == "none" and session.stats.total_recorded == 0
    assert not (tmp_path / "never.perfetto-trace").exists()


def test_start_takes_what_it_is_not_told_from_the_environment(monkeypatch: Any, tmp_path: Path) -> None:
    path = tmp_path / "env.perfetto-trace"
    monkeypatch.setenv("TRACEBRIDGE_OUTPUT", str(path))
    monkeypatch.setenv("TRACEBRIDGE_LEVEL", "3")
    monkeypatch.setenv("TRACEBRIDGE_SAMPLING", "probability:0")
    session = tracebridge.start()
    assert session.path == path and session.level == 3
    with tracebridge.span("dropped", level=2):  # (level 1, critical, is kept whatever the sampling)
        pass
    tracebridge.stop()
    assert tracebridge.read(path) == []  # probability:0 kept nothing
    # What the call says wins.
    session = tracebridge.start(2, format="memory", sampling=[])
    with tracebridge.span("kept"):
        pass
    assert [e.name for e in tracebridge.stop().events] == ["kept"] and session.level == 2


def test_log_lines_from_the_environment(monkeypatch: Any, caplog: Any) -> None:
    monkeypatch.setenv("TRACEBRIDGE_LOG_LINES", "yes")
    caplog.set_level("INFO", logger="tracebridge.trace")
    tracebridge.start()
    try:
        with tracebridge.span("lined"):
            pass
    finally:
        tracebridge.stop()
        tracebridge.configure(log_lines=False)
    assert any(r.getMessage().startswith("[TRACE] lined (") for r in caplog.records)


def test_runtime_from_the_environment(monkeypatch: Any) -> None:
    assert from_environment({"TRACEBRIDGE_RUNTIME": " On "}).runtime is True
    assert from_environment({"TRACEBRIDGE_RUNTIME": "0"}).runtime is False
    monkeypatch.setenv("TRACEBRIDGE_RUNTIME", "1")
    tracebridge.start(level=2)
    try:
        assert tracebridge.configure().runtime is True
    finally:
        session = tracebridge.stop()
        tracebridge.configure(runtime=False)
    assert {"threads", "gc.gen0.collections"} <= {e.name for e in session.events if e.kind == "counter"}


def test_run_reads_the_environment_and_refuses_a_bad_value(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("def work():\n    return 1\n")
    script = tmp_path / "app.py"
    script.write_text("import helper\n\nhelper.work()\n")
    out = tmp_path / "from-env.perfetto-trace"
    env = {"TRACEBRIDGE_OUTPUT": str(out), "TRACEBRIDGE_LEVEL": "2", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", str(script)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert [e.name for e in tracebridge.read(out)] == ["helper.work"]
    env["TRACEBRIDGE_SAMPLING"] = "sometimes"
    done = subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", str(script)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: TRACEBRIDGE_SAMPLING: 'sometimes' is not one of ratio:P, probability:P, adaptive:N, "
        "ratelimit:N"
    ]


def test_a_bad_value_leaves_a_handlers_recording_as_it_was(
    monkeypatch: Any, capsys: Any, tmp_path: Path
) -> None:
    import logging

    from tracebridge.logging import PerfettoHandler

    path = tmp_path / "handler.perfetto-trace"
    log = logging.getLogger("env.handler")
    log.propagate = False
    log.handlers = [PerfettoHandler(path)]
    try:
        log.warning("before")
        monkeypatch.setenv("TRACEBRIDGE_LEVEL", "loud")
        session = tracebridge.start()
        assert session.path == path and session.format == "perfetto"
        log.warning("after")
        tracebridge.stop()
    finally:
        for h in log.handlers:
            h.close()
        log.handlers = []
    assert capsys.readouterr().err.splitlines() == [
        "tracebridge: TRACEBRIDGE_LEVEL: 'loud' is not a whole number; start() changes nothing"
    ]
    assert [e.name for e in tracebridge.read(path)] == ["before", "after"]
