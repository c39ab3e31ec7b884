"""The package type-checks under mypy --strict and passes ruff (lint and format)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_mypy_strict() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff() -> None:
    lint = run("ruff", "check", "tracebridge", "tests", "benchmarks", "examples")
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = run("ruff", "format", "--check", "tracebridge", "tests", "benchmarks", "examples")
    assert fmt.returncode == 0, fmt.stdout[-4000:]
