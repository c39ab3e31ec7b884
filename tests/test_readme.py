"""README.md starts with the two commands a new user runs; CI runs exactly the second."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_commands_and_ci_agree() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    demo, tests = blocks[0].strip(), blocks[1].strip()
    assert "tracebridge demo" in demo
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()
    assert readme.index(demo) < readme.index(tests) < readme.index("tracebridge turns")
