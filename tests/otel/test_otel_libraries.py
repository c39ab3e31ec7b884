"""OpenTelemetry's instrumentation packages activated for a recording, with the real
opentelemetry-instrumentation-urllib and -sqlite3 against a loopback server."""

from __future__ import annotations

import sqlite3
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.instrumentation.urllib import URLLibInstrumentor

import tracebridge
from tracebridge.otel.libraries import activate_libraries
from tracebridge.reading import read_trace

from helpers import instrumentor_distributions, nested_on_thread, perfetto_import


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/items"
    server.shutdown()
    server.server_close()
    thread.join(5)


inside = nested_on_thread


def test_library_spans_land_inside_the_spans_that_made_them(trace_path: Path, loopback: str) -> None:
    session = tracebridge.start(output=trace_path)
    libraries = activate_libraries(session, environ={})
    try:
        assert libraries is not None
        assert {"sqlite3", "urllib"} <= set(libraries.activated)
        db = sqlite3.connect(":memory:")
        with tracebridge.span("checkout"):
            assert urllib.request.urlopen(loopback).read() == b"ok"
            db.cursor().execute("create table items (n)")

        def refresh() -> None:
            with tracebridge.span("refresh"):
                urllib.request.urlopen(loopback).read()

        worker = threading.Thread(target=refresh, name="refresher")
        worker.start()
        worker.join()
    finally:
        if libraries is not None:
            libraries.stop()
        tracebridge.stop()

    trace = read_trace(trace_path)
    assert trace.problems == []
    spans = [e for e in trace.events if e.kind == "span"]
    assert sorted(e.name for e in spans) == ["GET", "GET", "checkout", "create", "refresh"]
    (checkout,) = (e for e in spans if e.name == "checkout")
    (refresh_span,) = (e for e in spans if e.name == "refresh")
    gets = [e for e in spans if e.name == "GET"]
    (create,) = (e for e in spans if e.name == "create")
    assert inside(gets[0], checkout) and inside(create, checkout) and inside(gets[1], refresh_span)
    assert gets[1].thread_name == "refresher" != checkout.thread_name
    for get in gets:
        assert get.metadata["http.url"] == loopback
        assert get.metadata["http.status_code"] == 200
        assert get.metadata["otel.kind"] == "CLIENT"
        assert get.metadata["otel.scope"] == "opentelemetry.instrumentation.urllib"
    assert create.metadata["db.system"] == "sqlite"
    assert create.metadata["db.statement"] == "create table items (n)"
    # The official schema, by trace_processor's rules: the same slices, the library's on their caller's track.
    imported = perfetto_import(trace_path)
    assert imported.stats == {}
    track = {name: uuid for name, uuid, _, _ in imported.slices}
    assert track["create"] == track["checkout"] and track["GET"] in (track["checkout"], track["refresh"])
    # Undone: the libraries are as they were.
    assert not URLLibInstrumentor().is_instrumented_by_opentelemetry
    assert not hasattr(sqlite3.connect, "__wrapped__")


def test_disabled_instrumentations_are_left_off(trace_path: Path) -> None:
    session = tracebridge.start(output=trace_path)
    try:
        libraries = activate_libraries(
            session, environ={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": " urllib ,x"}
        )
        assert libraries is not None
        try:
            assert "urllib" not in libraries.activated and "sqlite3" in libraries.activated
            assert not URLLibInstrumentor().is_instrumented_by_opentelemetry
        finally:
            libraries.stop()
        assert activate_libraries(session, environ={"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}) is None
    finally:
        tracebridge.stop()


def test_an_instrumentor_that_fails_is_one_line_and_the_others_go_on(
    trace_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(instrumentor_distributions(tmp_path / "site")))
    lines: list[str] = []
    session = tracebridge.start(output=trace_path)
    try:
        libraries = activate_libraries(session, environ={}, report=lines.append)
        assert libraries is not None
        try:
            assert {"sqlite3", "urllib"} <= set(libraries.activated)
            assert not {"absent", "broken_import", "broken_instrument", "old_wrapt"} & set(
                libraries.activated
            )
        finally:
            libraries.stop()
    finally:
        tracebridge.stop()
    assert lines[:2] == [
        "tracebridge: library spans: broken_import could not be activated "
        "(ImportError: needs a module that is not here); the others go on",
        "tracebridge: library spans: broken_instrument could not be activated "
        "(RuntimeError: cannot patch the library); the others go on",
    ]
    # A library installed at a version the package does not instrument is said; one not installed is not.
    assert len(lines) == 3 and lines[2].startswith("tracebridge: library spans: old_wrapt left out: ")
    assert "wrapt<1.0" in lines[2]


def test_the_programs_own_instrumentation_wins(trace_path: Path, loopback: str) -> None:
    """An instrumentor is one object per class: when the program instruments urllib itself, with a
    provider of its own, its spans go there (not into the trace), and stay instrumented after the
    recording stops."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    session = tracebridge.start(output=trace_path)
    libraries = activate_libraries(session, environ={})
    own = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(own))
    try:
        assert libraries is not None and "urllib" in libraries.activated
        URLLibInstrumentor().instrument(tracer_provider=provider)
        with urllib.request.urlopen(loopback) as response:
            assert response.read() == b"ok"
    finally:
        if libraries is not None:
            libraries.stop()
        tracebridge.stop()
    try:
        assert [span.name for span in own.get_finished_spans()] == ["GET"]
        assert URLLibInstrumentor().is_instrumented_by_opentelemetry  # (still the program's)
        assert "instrument" not in vars(URLLibInstrumentor())
        assert [e.name for e in read_trace(trace_path).events if e.name == "GET"] == []
    finally:
        URLLibInstrumentor().uninstrument()
