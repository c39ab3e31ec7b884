"""``tracebridge run``: a program run as python runs it, instrumented, its trace written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import tracebridge
from tracebridge.reading import read_trace

from helpers import LOOPBACK_SERVER, instrumentor_distributions


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
                if item == "slow":
                    time.sleep(0.05)
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
    result = run(
        ["--min-duration", "20ms", "--log-lines", "-o", str(out), str(main), "0", "--fail"], tmp_path
    )
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


def test_module_options_are_the_modules(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "shop" / "echo.py").write_text("import sys\nprint(sys.argv)\n")
    out = tmp_path / "t.perfetto-trace"
    result = run(["-o", str(out), "-m", "shop.echo", "--port", "1", "-o", "x", "--"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(", '--port', '1', '-o', 'x', '--']\n")
    assert out.exists()  # -o before -m is ours


def test_failures_are_reported_as_python_reports_them(tmp_path: Path) -> None:
    main = project(tmp_path)
    result = run(["-o", str(tmp_path / "t.perfetto-trace"), str(main), "0", "--fail"], tmp_path)
    assert result.returncode == 1
    trace = result.stderr[result.stderr.index("Traceback") :]
    assert 'main.py", line' in trace and "KeyError: 'boom'" in trace
    assert "runpy" not in trace and "_run.py" not in trace and "cli.py" not in trace


def test_bad_arguments(tmp_path: Path) -> None:
    assert run([], tmp_path).returncode == 2
    assert "no such file" in run(["missing.py"], tmp_path).stderr
    main = project(tmp_path)
    bad = run(["--min-duration", "soon", str(main)], tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --min-duration")
    level = run(["--level", "0", str(main)], tmp_path)
    assert (
        level.returncode == 2
        and level.stderr.startswith("error: --level")
        and "Traceback" not in level.stderr
    )
    pattern = run(["-i", " shop", str(main)], tmp_path)
    assert (
        pattern.returncode == 2 and pattern.stderr.startswith("error:") and "Traceback" not in pattern.stderr
    )
    missing = run(["-o", str(tmp_path / "none.perfetto-trace"), "-m", "no_such_module"], tmp_path)
    assert (missing.returncode, missing.stderr) == (1, "error: No module named no_such_module\n")
    assert not (tmp_path / "none.perfetto-trace").exists()


def test_trace_lines_are_printed_once_when_the_program_configures_logging(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "app.py").write_text(
        "import logging, sys\nlogging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
        "from shop.cart import total\ntotal(['a'])\n"
    )
    result = run(["--log-lines", "-o", str(tmp_path / "t.perfetto-trace"), "app.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "shop.cart.total" in line]
    assert len(lines) == 1 and lines[0].startswith("INFO:tracebridge.trace:[TRACE]")


def test_module_of_a_package_that_imports_its_own_functions(tmp_path: Path) -> None:
    # The package imports a function at import time: it must be instrumented before that happens.
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "__init__.py").write_text("from .helpers import price\n")
    (tmp_path / "store" / "helpers.py").write_text("def price():\n    return 5\n")
    (tmp_path / "store" / "main.py").write_text("from store import price\nprint(price())\n")
    out = tmp_path / "t.perfetto-trace"
    result = run(["-o", str(out), "-m", "store.main"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert [e.name for e in tracebridge.read(out)] == ["store.helpers.price"]


def test_the_programs_excepthook_sees_its_exception(tmp_path: Path) -> None:
    (tmp_path / "hooked.py").write_text(
        "import sys\n"
        "sys.excepthook = lambda t, e, tb: print('hook saw', t.__name__, tb.tb_frame.f_code.co_filename)\n"
        "raise KeyError('x')\n"
    )
    result = run(["-o", str(tmp_path / "t.perfetto-trace"), "hooked.py"], tmp_path)
    assert result.returncode == 1
    assert "hook saw KeyError" in result.stdout and "hooked.py" in result.stdout


def test_abbreviated_options_are_not_taken(tmp_path: Path) -> None:
    project(tmp_path)
    result = run(["--out", str(tmp_path / "t.perfetto-trace"), "-m", "shop"], tmp_path)
    assert result.returncode == 2 and "unrecognized arguments: --out" in result.stderr


def test_trace_lines_show_when_the_programs_logging_would_not(tmp_path: Path) -> None:
    project(tmp_path)
    (tmp_path / "quiet.py").write_text(
        "import logging, sys\nlogging.basicConfig(stream=sys.stderr, level=logging.WARNING)\n"
        "logging.getLogger().handlers[0].setLevel(logging.WARNING)\n"
        "from shop.cart import total\ntotal(['a'])\n"
    )
    result = run(["--log-lines", "-o", str(tmp_path / "t.perfetto-trace"), "quiet.py"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "shop.cart.total" in line]
    assert len(lines) == 1 and lines[0].startswith("[TRACE] shop.cart.total")


def test_run_loses_nothing_by_default_and_drops_when_asked(tmp_path: Path) -> None:
    (tmp_path / "work.py").write_text("def step(i):\n    return i + 1\n")
    main = tmp_path / "loop.py"
    main.write_text(
        textwrap.dedent(
            """
            import tracebridge
            from work import step
            tracebridge.configure(thread_buffer=16)  # a tight loop outruns the writer at once
            for i in range(20_000):
                step(i)
            """
        )
    )
    out = tmp_path / "t.perfetto-trace"
    result = run(["-o", str(out), str(main)], tmp_path)
    assert result.returncode == 0, result.stderr
    trace = read_trace(out)
    assert trace.stats is not None and trace.stats.dropped == {}
    assert [e.name for e in trace.events].count("work.step") == 20_000
    assert "dropped" not in result.stderr

    result = run(["--on-full", "drop", "-o", str(out), str(main)], tmp_path)
    assert result.returncode == 0, result.stderr
    trace = read_trace(out)
    assert trace.stats is not None
    lost = trace.stats.dropped["queue_full"]["span"]
    assert [e.name for e in trace.events].count("work.step") == 20_000 - lost
    assert f"; {lost} dropped (queue_full)" in result.stderr
    assert trace.losses and trace.problems == []


def client_project(root: Path) -> Path:
    """A program whose own functions make HTTP requests (urllib, to a loopback server) and queries
    (sqlite3), on the main thread and on a worker thread."""
    (root / "shop").mkdir()
    (root / "shop" / "__init__.py").write_text("")
    (root / "shop" / "client.py").write_text(
        textwrap.dedent(
            """
            import urllib.request

            def fetch(url):
                with urllib.request.urlopen(url) as response:
                    return response.read()

            def store(db, n):
                db.cursor().execute("insert into items values (?)", (n,))
            """
        )
    )
    main = root / "main.py"
    main.write_text(
        LOOPBACK_SERVER
        + textwrap.dedent(
            """
            import sqlite3
            from shop.client import fetch, store

            db = sqlite3.connect(":memory:")
            db.execute("create table items (n)")
            for n in range(3):
                assert fetch(URL) == b"ok"
                store(db, n)
            worker = threading.Thread(target=fetch, args=(URL,), name="worker")
            worker.start()
            worker.join()
            SERVER.shutdown()
            """
        )
    )
    return main


def test_library_spans_land_inside_the_programs_calls(tmp_path: Path) -> None:
    main = client_project(tmp_path)
    site = instrumentor_distributions(
        tmp_path / "site"
    )  # (instrumentors that fail: said, and the rest go on)
    out = tmp_path / "t.perfetto-trace"
    result = run(["-o", str(out), str(main)], tmp_path, {"PYTHONPATH": str(site)})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.partition(" (")[0] for line in lines[:2]] == [
        "tracebridge: library spans: broken_import could not be activated",
        "tracebridge: library spans: broken_instrument could not be activated",
    ]
    assert lines[2].startswith("tracebridge: library spans: old_wrapt left out: ")
    assert lines[3] == "tracebridge: library spans from sqlite3, urllib"
    assert len(lines) == 5 and lines[4].startswith("tracebridge: ")

    trace = read_trace(out)
    assert trace.problems == []
    spans = [e for e in trace.events if e.kind == "span"]
    fetches = [e for e in spans if e.name == "shop.client.fetch"]
    stores = [e for e in spans if e.name == "shop.client.store"]
    gets = [e for e in spans if e.name == "GET"]
    inserts = [e for e in spans if e.name == "insert"]
    assert (len(fetches), len(stores), len(gets), len(inserts)) == (4, 3, 4, 3)
    for outer, inner in [*zip(fetches, gets, strict=True), *zip(stores, inserts, strict=True)]:
        assert inner.thread_id == outer.thread_id and not inner.overlapping
        assert inner.end_ns is not None and outer.end_ns is not None
        assert outer.start_ns <= inner.start_ns <= inner.end_ns <= outer.end_ns
    assert [e.thread_name for e in gets] == ["MainThread"] * 3 + ["worker"]
    assert all(e.metadata["http.status_code"] == 200 and e.metadata["otel.kind"] == "CLIENT" for e in gets)
    assert all(e.metadata["db.statement"] == "insert into items values (?)" for e in inserts)


def test_no_library_spans(tmp_path: Path) -> None:
    main = client_project(tmp_path)
    out = tmp_path / "t.perfetto-trace"
    result = run(["--no-library-spans", "-o", str(out), str(main)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "library spans" not in result.stderr
    names = [e.name for e in read_trace(out).events]
    assert names.count("shop.client.fetch") == 4 and "GET" not in names and "insert" not in names


def test_runtime_metrics_of_the_program(tmp_path: Path) -> None:
    main = tmp_path / "garbage.py"
    main.write_text(
        textwrap.dedent(
            """
            import gc

            class Node:
                def __init__(self, parent):
                    self.parent, self.children = parent, []

            root = Node(None)
            root.children = [Node(root) for _ in range(1000)]
            del root
            print(gc.collect() >= 1000)
            """
        )
    )
    out = tmp_path / "t.perfetto-trace"
    result = run(["--runtime", "-o", str(out), str(main)], tmp_path)
    assert result.returncode == 0 and result.stdout == "True\n", result.stderr
    events = tracebridge.read(out)
    assert {"threads", "gc.gen2.collections"} <= {e.name for e in events if e.kind == "counter"}
    full = [e for e in events if e.track == "GC" and e.metadata.get("generation") == 2]
    assert any(e.metadata["collected"] >= 1000 for e in full)
    result = run(["-o", str(out), str(main)], tmp_path)  # (off unless asked)
    assert not [e for e in tracebridge.read(out) if e.kind == "counter" or e.track == "GC"]
