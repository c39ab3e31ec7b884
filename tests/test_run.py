"""``tracebridge run``: a program run as python runs it, instrumented, its trace written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import tracebridge


def project(root: Path) -> Path:
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "cart.py").write_text(
        textwrap.dedent(
            """
            import time

            def total(items):
                return sum(price(i) for i in items)

            def price(item):
                time.sleep(0.002 if item == "slow" else 0)
                return 5
            """
        )
    )
    (root / "shop" / "__main__.py").write_text(
        "import sys\nfrom shop.cart import total\nprint(total(sys.argv[1:]))\n"
    )
    main = root / "main.py"
    main.write_text(
        textwrap.dedent(
            """
            import sys
            from shop.cart import total
            print(sys.argv[1:], __name__, total(["a", "slow"]))
            if "--fail" in sys.argv:
                raise KeyError("boom")
            sys.exit(int(sys.argv[1]))
            """
        )
    )
    return main


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracebridge", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_script_like_python(tmp_path: Path) -> None:
    main = project(tmp_path)
    out = tmp_path / "t.perfetto-trace"
    result = run(["-o", str(out), str(main), "7", "x"], tmp_path)
    assert result.returncode == 7
    assert result.stdout == "['7', 'x'] __main__ 10\n"
    names = [e.name for e in tracebridge.read(out)]
    assert names.count("shop.cart.price") == 2 and names.count("shop.cart.total") == 1
    assert "events in" in result.stderr


def test_exceptions_and_min_duration_and_lines(tmp_path: Path) -> None:
    main = project(tmp_path)
    out = tmp_path / "t.perfetto-trace"
    result = run(["--min-duration", "1ms", "--log-lines", "-o", str(out), str(main), "0", "--fail"], tmp_path)
    assert result.returncode == 1
    assert "KeyError: 'boom'" in result.stderr.splitlines()[-2] or "KeyError: 'boom'" in result.stderr
    names = [e.name for e in tracebridge.read(out)]
    assert names == ["shop.cart.total", "shop.cart.price"]  # the fast price() call is left out
    assert "[TRACE] shop.cart.price (" in result.stderr


def test_module_and_environment_patterns(tmp_path: Path) -> None:
    project(tmp_path)
    out = tmp_path / "t.perfetto-trace"
    result = run(["-o", str(out), "-m", "shop", "a", "b"], tmp_path, {"TRACEBRIDGE_INSTRUMENT": "shop.cart"})
    assert result.returncode == 0 and result.stdout == "10\n"
    assert [e.name for e in tracebridge.read(out)].count("shop.cart.price") == 2


def test_bad_arguments(tmp_path: Path) -> None:
    assert run([], tmp_path).returncode == 2
    assert "no such file" in run(["missing.py"], tmp_path).stderr
    bad = run(["--min-duration", "soon", str(project(tmp_path))], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --min-duration")
