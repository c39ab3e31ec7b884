"""No credential in clear: a program hands secrets to every input tracebridge has (span names and
metadata, TraceMe's encoded names, log messages, their arguments and extras, exception messages,
captured arguments and return values, structlog, OpenTelemetry spans and attributes, the command line),
and none of them reaches the trace file (every byte, compressed packets inflated), the trace lines, or
what the OpenTelemetry bridge exports. Every scrub is counted."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracebridge
from tracebridge._sanitize import Counts, Limits, is_secret_key, sanitize_value, scrub_argv, scrub_text
from tracebridge.logging import PerfettoHandler, TraceFormatter
from tracebridge.otel import PerfettoSpanProcessor
from tracebridge.structlog import PerfettoProcessor, TraceLineRenderer

from helpers import expand

SECRET = re.compile(rb"S3CRET\d+")


def _secrets_in(data: bytes) -> list[bytes]:
    return sorted(set(SECRET.findall(data)))


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "X-Api-Key",
        "pwd",
        "private_key",
        "passphrase",
        "access_key",
        "auth",
        "bearer",
        "apiKey",
        "DB_PASSWORD",
        "credential",
        "jwt",
        "sentry_dsn",
        "privateKey",
        "signature",
        "Authorization",
        "session_id",
        "refresh-token",
        "client_secret",
        "Cookie",
        "db_pw",
        "PW",
        "signing_key",
        "encryptionKey",
    ],
)
def test_secret_keys_in_any_case_and_spelling(key: str) -> None:
    assert is_secret_key(key, Limits())


@pytest.mark.parametrize(
    "key",
    [
        "author",
        "authored_by",
        "user",
        "path",
        "host",
        "bypass",
        "passes",
        "compass",
        "cache_key",
        "pass_count",
    ],
)
def test_ordinary_keys_are_kept(key: str) -> None:
    assert not is_secret_key(key, Limits())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "GET https://api.example.com/v1?token=abc&page=2",
            "GET https://api.example.com/v1?token=[scrubbed]&page=2",
        ),
        ("postgres://app:hunter2@db:5432/main", "postgres://app:[scrubbed]@db:5432/main"),
        ("redis://:pw@cache", "redis://:[scrubbed]@cache"),
        ("Authorization: Bearer eyJhbGciOi.abc-def", "Authorization: Bearer [scrubbed]"),
        ("basic dXNlcjpwYXNz", "basic [scrubbed]"),
        ("login user=bob password=hunter2 done", "login user=bob password=[scrubbed] done"),
        (
            "bad config {'password': 'hunter2', 'host': 'x'}",
            "bad config {'password': [scrubbed], 'host': 'x'}",
        ),
        ('{"api_key": "k-1", "n": 1}', '{"api_key": [scrubbed], "n": 1}'),
        ("Server=db;Password=hunter2;Database=x", "Server=db;Password=[scrubbed];Database=x"),
        ("bEARER abcdefgh123", "bEARER [scrubbed]"),
        ("password = hunter2", "password = [scrubbed]"),
        ("pin=1234", "pin=1234"),
        ("pwd=1234", "pwd=[scrubbed]"),
        ("postgres://app:p@ss@db/main", "postgres://app:[scrubbed]@db/main"),
        ("X-Api-Key: k-123 sent", "X-Api-Key: [scrubbed] sent"),
        ("password:\thunter2", "password:\t[scrubbed]"),
        ("Authorization: Token abc123", "Authorization: Token [scrubbed]"),
        ("Proxy-Authorization: Digest x9", "Proxy-Authorization: Digest [scrubbed]"),
        ("user[password]=hunter2&user[name]=bob", "user[password]=[scrubbed]&user[name]=bob"),
        ("get(url, auth=('bob', 'hunter2'))", "get(url, auth=[scrubbed])"),
        ("Config(tokens=['a'], api_key=['k1', 'k2'])", "Config(tokens=['a'], api_key=[scrubbed])"),
        ("db_pw=hunter2 done", "db_pw=[scrubbed] done"),
        (
            'curl -H "Authorization: Bearer abcdefgh12345678" https://api',
            'curl -H "Authorization: Bearer [scrubbed]" https://api',
        ),
        ("(Authorization: Token abc123)", "(Authorization: Token [scrubbed])"),
        ("PW=x", "PW=[scrubbed]"),
        # Kept: no credential in them.
        ("mail bob@example.com, see http://user@host/x", "mail bob@example.com, see http://user@host/x"),
        ("author=Bob x=1 a=b=c", "author=Bob x=1 a=b=c"),
        ("session started: 5 users", "session started: 5 users"),
        ("Error: timeout at 10:30, see http://x/y", "Error: timeout at 10:30, see http://x/y"),
        ("git@github.com:org/repo.git and a:b", "git@github.com:org/repo.git and a:b"),
        ("bypass=1 compass=north", "bypass=1 compass=north"),
        ("mailto:john@x.com To:bob@example.com", "mailto:john@x.com To:bob@example.com"),
        ("WARNING:app:alice@example.com logged in", "WARNING:app:alice@example.com logged in"),
        ("image nginx:1.25@sha256:abc", "image nginx:1.25@sha256:abc"),
        ("pass_rate=0.98 Tests: pass: 120, fail: 3", "pass_rate=0.98 Tests: pass: 120, fail: 3"),
        ("using basic settings; the bearer of this token", "using basic settings; the bearer of this token"),
        (
            "max_tokens=256 tokenizer=gpt2 authenticated=True",
            "max_tokens=256 tokenizer=gpt2 authenticated=True",
        ),
        ("user=%s password=%s token={}", "user=%s password=%s token={}"),
        ("is_private=true password=None", "is_private=true password=None"),
    ],
)
def test_credentials_inside_text(text: str, expected: str) -> None:
    counts = Counts()
    assert scrub_text(text, Limits(), counts) == expected
    assert counts.scrubbed == (text != expected)
    assert scrub_text(expected, Limits(), counts) == expected  # twice changes nothing more
    assert counts.scrubbed == (text != expected)


def test_keys_after_brackets_and_subscripts() -> None:
    counts = Counts()
    text = (
        "[user=bob][token=abc123][password=hunter2] [a1b2c3d4e5f6a7b8c9d0][00f067aa0ba902b7][w-1]password=x"
    )
    expected = (
        "[user=bob][token=[scrubbed]][password=[scrubbed]] [a1b2c3d4e5f6a7b8c9d0][00f067aa0ba902b7][w-1]"
        "password=[scrubbed]"
    )
    assert scrub_text(text, Limits(), counts) == expected
    assert counts.scrubbed == 3
    assert scrub_text(expected, Limits(), counts) == expected and counts.scrubbed == 3


def test_command_line() -> None:
    counts = Counts()
    argv = [
        "app.py",
        "--db-password=s1",
        "--token",
        "s2",
        "--user",
        "ann",
        "--url",
        "https://a:s3@h/?x=1",
        "-v",
    ]
    assert scrub_argv(argv, Limits(), counts) == [
        "app.py",
        "--db-password=[scrubbed]",
        "--token",
        "[scrubbed]",
        "--user",
        "ann",
        "--url",
        "https://a:[scrubbed]@h/?x=1",
        "-v",
    ]
    assert counts.scrubbed == 3
    assert scrub_argv(argv, Limits(secret_keys=None)) == argv
    # A flag that takes no value, or whose name only starts like a secret, keeps the next argument.
    flags = ["--no-auth", "in.csv", "--session-timeout", "30", "--private", "--password", "-x"]
    assert scrub_argv(flags, Limits()) == flags


def test_no_credential_reaches_the_trace_the_lines_or_an_exporter(tmp_path: Path) -> None:
    path = tmp_path / "app.perfetto-trace"
    lines = io.StringIO()
    line_handler = logging.StreamHandler(lines)
    line_handler.setFormatter(TraceFormatter("%(message)s"))
    log = logging.getLogger("secrets.app")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(PerfettoHandler(path))
    log.addHandler(line_handler)
    exporter = InMemorySpanExporter()
    bridge_provider = TracerProvider()
    bridge_provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_provider = TracerProvider()
    otel_provider.add_span_processor(PerfettoSpanProcessor(path))
    structlog.configure(processors=[PerfettoProcessor(path), TraceLineRenderer()])
    rendered = []

    @tracebridge.traced
    def connect(dsn: str, **options: object) -> str:
        return "session=S3CRET1"

    tracebridge.configure(otel=bridge_provider, log_lines=True)
    session = tracebridge.start(2, path)
    try:
        with tracebridge.span(
            "GET https://api.example.com/items?access_token=S3CRET2&page=2", url="https://u:S3CRET3@h"
        ):
            with tracebridge.span("login#password=S3CRET4,user=ann#"):
                tracebridge.instant(
                    "headers", headers={"Authorization": "Bearer S3CRET5", "X-Api-Key": "S3CRET6"}
                )
            connect("postgres://app:S3CRET7@db/main", timeout=3)
            log.info("connecting to postgres://app:S3CRET8@db")
            log.warning("user=%s password=%s", "bob", "S3CRET9", extra={"auth_header": "Basic S3CRET10"})
            try:
                with tracebridge.span("load_config"):
                    raise ValueError("bad config {'password': 'S3CRET11'}")
            except ValueError:
                log.exception("failed with token=S3CRET12")
            rendered.append(
                structlog.get_logger().info("call", api_key="S3CRET13", url="http://x/?apikey=S3CRET14")
            )
            with tracebridge.span("tracked", track="https://u:S3CRET17@h", category="token=S3CRET18"):
                tracebridge.instant("keys", **{"GET /?token=S3CRET19": 1})
            worker = threading.Thread(
                target=lambda: tracebridge.instant("in thread"), name="w password=S3CRET20"
            )
            worker.start()
            worker.join()
            with otel_provider.get_tracer("t").start_as_current_span(
                "query", attributes={"db.connection_string": "Server=x;Password=S3CRET15;", "jwt": "S3CRET16"}
            ):
                pass
    finally:
        tracebridge.stop()
        tracebridge.configure(otel=False, log_lines=False)
        structlog.reset_defaults()
        for h in log.handlers[:]:
            log.removeHandler(h)
            h.close()
        otel_provider.shutdown()
    data = path.read_bytes()
    assert _secrets_in(expand(data)) == []
    assert _secrets_in(data) == []
    assert _secrets_in(lines.getvalue().encode()) == [], lines.getvalue()
    assert _secrets_in(" ".join(map(str, rendered)).encode()) == []
    exported = repr(
        [
            (
                s.name,
                dict(s.attributes or {}),
                [(e.name, dict(e.attributes or {})) for e in s.events],
                s.status.description,
            )
            for s in exporter.get_finished_spans()
        ]
    )
    assert _secrets_in(exported.encode()) == [], exported
    # What was there is still there, the credentials replaced.
    events = tracebridge.read(path)
    names = {ev.name for ev in events}
    assert "GET https://api.example.com/items?access_token=[scrubbed]&page=2" in names
    assert "connecting to postgres://app:[scrubbed]@db" in names
    assert "login" in names and "query" in names
    assert session.stats.scrubbed >= 20


def test_the_command_line_in_the_trace_is_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "cmd.perfetto-trace"
    script = tmp_path / "app.py"
    script.write_text(
        "import sys, tracebridge\n"
        "tracebridge.start(2, sys.argv[1])\n"
        "with tracebridge.span('work'):\n    pass\n"
        "print(tracebridge.stop().stats.scrubbed)\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(path),
            "--db-password=S3CRET1",
            "--token",
            "S3CRET2",
            "--name",
            "ok",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(done.stdout) == 2
    data = path.read_bytes()
    assert _secrets_in(data) == [] and b"--db-password=[scrubbed]" in data and b"ok" in data


def test_formatters_scrub_whatever_put_the_text_there() -> None:
    """A traceback another formatter cached on the record, %(span_name)s, a structlog event's
    positional arguments: all scrubbed in the line."""
    log = logging.getLogger("secrets.formatters")
    log.propagate = False
    plain, ours = io.StringIO(), io.StringIO()
    first = logging.StreamHandler(plain)
    first.setFormatter(logging.Formatter("%(message)s"))
    second = logging.StreamHandler(ours)
    second.setFormatter(TraceFormatter("%(span_name)s %(message)s"))
    log.handlers = [first, second]
    tracebridge.start(2)
    try:
        with tracebridge.span("GET /items?access_token=S3CRET1"):
            try:
                raise ValueError("cannot reach postgres://app:S3CRET2@db")
            except ValueError:
                log.exception("failed with password=S3CRET3")
    finally:
        tracebridge.stop()
        log.handlers = []
    assert "S3CRET2" in plain.getvalue()  # (the plain formatter's line is the program's business)
    assert _secrets_in(ours.getvalue().encode()) == [], ours.getvalue()
    assert "Traceback (most recent call last):" in ours.getvalue()
    structlog.configure(
        processors=[TraceLineRenderer()],
        logger_factory=structlog.ReturnLoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    try:
        line = structlog.get_logger().info("login password=%s", "S3CRET4")
    finally:
        structlog.reset_defaults()
    assert line == "[INFO] login password=[scrubbed]"


def test_the_bridge_records_exceptions_as_the_sdk_does_scrubbed() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracebridge.configure(otel=provider)
    tracebridge.start(2)
    try:
        with pytest.raises(KeyError), tracebridge.span("load"):
            raise KeyError("token=S3CRET1")
    finally:
        tracebridge.stop()
        tracebridge.configure(otel=False)
    (span,) = exporter.get_finished_spans()
    (event,) = span.events
    attributes = dict(event.attributes or {})
    assert attributes["exception.type"] == "KeyError" and attributes["exception.escaped"] == "True"
    assert str(attributes["exception.stacktrace"]).startswith("Traceback (most recent call last):")
    assert attributes["exception.message"] == "'token=[scrubbed]'"
    assert _secrets_in(repr(attributes).encode() + (span.status.description or "").encode()) == []


_PIECES = [
    "password",
    "token",
    "page",
    "api_key",
    "=",
    " = ",
    " ",
    "@",
    "x",
    "://",
    "'",
    '"',
    ":",
    "Bearer ",
    "basic ",
    "abcdefgh12",
    "dXNlcjpwYXNz",
    ": ",
    "[",
    "]",
    "(",
    "Authorization",
    ".",
    "-",
    "_",
    "&",
    "?",
    "%s",
    "{}",
    "True",
    ",",
]


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join), min_size=1, max_size=60))
def test_the_trace_holds_what_scrub_text_makes_of_any_text(tmp_path_factory: Any, texts: list[str]) -> None:
    """Whatever the text, a span named by it and a value holding it are written as ``scrub_text`` makes
    them, on the compiled path too (which asks Python only about text that may hold a credential, and
    knows from the sanitizer's cache which parameter names are none)."""
    path = tmp_path_factory.mktemp("scrub") / "t.perfetto-trace"
    tracebridge.start(2, path)
    try:
        for _ in range(2):  # (the second time, the keys are in the sanitizer's cache)
            for text in texts:
                with tracebridge.span(text or "x", value=text):
                    pass
    finally:
        tracebridge.stop()
    spans = [ev for ev in tracebridge.read(path) if ev.kind == "span"]
    limits = Limits()
    expected = [(scrub_text(t or "x", limits), scrub_text(t, limits)) for t in texts] * 2
    got = [(ev.name, ev.metadata.get("value")) for ev in spans]
    assert sorted(got) == sorted(expected)


def test_a_message_that_does_not_format_keeps_a_secret_argument_out(tmp_path: Path) -> None:
    path = tmp_path / "t.perfetto-trace"
    log = logging.getLogger("secrets.unformatted")
    log.propagate = False
    log.handlers = [PerfettoHandler(path)]
    stream = io.StringIO()
    line = logging.StreamHandler(stream)
    line.setFormatter(TraceFormatter("%(message)s"))
    log.handlers.append(line)
    try:
        log.warning("login password=%d", "S3CRET1")
        log.warning("%d items", "many")  # (nothing secret: the arguments are shown)
        tracebridge.stop()
    finally:
        for h in log.handlers:
            h.close()
        log.handlers = []
    assert _secrets_in(stream.getvalue().encode()) == [] and "('many',)" in stream.getvalue()
    assert _secrets_in(expand(path.read_bytes())) == []


def test_a_long_text_is_scrubbed_as_far_as_it_is_kept() -> None:
    """Scrubbing costs what the cap keeps, not what the program hands over: a 360 KB value dense with
    secret-named parameters is scrubbed up to the cut (and a little beyond), then cut; sanitizing the
    result again changes nothing, though the cut leaves a key last."""
    limits = Limits()
    counts = Counts()
    out = sanitize_value("pw: x " * 60_000, limits, counts)
    assert out.endswith(f"…[+{360_000 - limits.max_string} chars]") and len(out) < limits.max_string + 30
    assert "pw: x" not in out
    assert 2_700 <= counts.scrubbed <= 4_000  # (the kept part's ~2,730, and the margin's: not 60,000)
    assert sanitize_value(out, limits, Counts()) == out
    # A credential that the cut splits is found whole (then cut).
    split = "a" * (limits.max_string - 12) + " password=hunter2hunter2 " + "b" * 50_000
    assert "hunter" not in sanitize_value(split, limits, Counts())
