from __future__ import annotations

import contextlib
import io
import logging
import logging.config
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tracebridge
from tracebridge._model import Record
from tracebridge.logging import (
    PerfettoHandler,
    RateLimitFilter,
    SamplingFilter,
    TraceContextFilter,
    TraceFormatter,
    record_from_log,
)
from tracebridge.sampling import ParentBased, TraceIdRatio

from helpers import decode


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"tbtest.{time.perf_counter_ns()}")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def capture(logger: logging.Logger, formatter: logging.Formatter, *filters: logging.Filter) -> io.StringIO:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    for f in filters:
        handler.addFilter(f)
    logger.addHandler(handler)
    return stream


def test_perfetto_handler_from_dictconfig(trace_path: Path) -> None:
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {
                "trace": {"class": "tracebridge.logging.PerfettoHandler", "filename": str(trace_path)}
            },
            "loggers": {"dictcfg": {"handlers": ["trace"], "level": "DEBUG", "propagate": False}},
        }
    )
    log = logging.getLogger("dictcfg")
    try:
        log.info("plain")
        with tracebridge.span("request", level=2):
            log.warning("inside %s", "the span", extra={"user": "ann"})
            try:
                raise KeyError("k")
            except KeyError:
                log.exception("failed")
        session = tracebridge.stop()
    finally:
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    logs = [e for e in tracebridge.read(trace_path) if e.kind == "log"]
    assert [e.name for e in logs] == ["plain", "inside the span", "failed"]
    assert [e.value for e in logs] == [4, 5, 6]
    assert logs[1].metadata == {"logger": "dictcfg", "message_template": "inside %s", "user": "ann"}
    assert logs[0].source is not None and logs[0].source.file == __file__
    assert logs[2].error is not None and logs[2].error.type == "KeyError"
    assert session.stats.recorded["log"] == 3
    # The official schema: LogMessage with interned body and source location, the callstack on failure.
    trace = decode(trace_path)
    bodies = {b.body for p in trace.packet for b in p.interned_data.log_message_body}
    assert {"plain", "inside the span", "failed"} <= bodies
    failed = next(
        p
        for p in trace.packet
        if p.track_event.HasField("log_message") and p.track_event.log_message.prio == 6
    )
    assert failed.track_event.callstack.frames[-1].function_name == "test_perfetto_handler_from_dictconfig"


def test_handlers_and_sessions_share_one_file(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "shared.perfetto-trace"
    first = PerfettoHandler(path)
    second = PerfettoHandler(str(path))
    logger.addHandler(first)
    logger.addHandler(second)
    session = tracebridge.start(level=3, output=path)  # joins the recording the handlers began
    assert session is first.session is second.session
    logger.info("once")
    tracebridge.stop()
    events = tracebridge.read(path)
    assert [e.name for e in events] == ["once", "once"]  # two handlers, one file
    logger.info("after stop")
    assert first.dropped == 1


def test_start_for_another_file_while_a_handler_records(tmp_path: Path) -> None:
    PerfettoHandler(tmp_path / "a.perfetto-trace")
    with pytest.raises(RuntimeError, match="PerfettoHandler"):
        tracebridge.start(output=tmp_path / "b.perfetto-trace")
    tracebridge.stop()


def test_trace_context_filter(logger: logging.Logger) -> None:
    stream = capture(
        logger,
        logging.Formatter("%(trace_id)s|%(span_id)s|%(span_name)s|%(sampled)s|%(message)s"),
        TraceContextFilter(),
    )
    tracebridge.start()
    try:
        logger.info("outside")
        with tracebridge.span("work", level=1) as s:
            logger.info("inside")
    finally:
        tracebridge.stop()
    outside, inside = stream.getvalue().splitlines()
    assert outside == "||||outside"
    trace_id, span_id, name, sampled, _ = inside.split("|")
    assert trace_id == f"{s.trace_id:032x}" and span_id == f"{s.span_id:016x}"
    assert (name, sampled) == ("work", "1")


def test_trace_context_from_opentelemetry(logger: logging.Logger) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("t")
    stream = capture(logger, logging.Formatter("%(trace_id)s %(span_name)s"), TraceContextFilter())
    with tracer.start_as_current_span("otel-op") as otel_span:
        logger.info("x")
    assert stream.getvalue().strip() == f"{otel_span.get_span_context().trace_id:032x} otel-op"


def test_format_strings_never_fail_without_the_filter(logger: logging.Logger) -> None:
    stream = capture(logger, TraceFormatter("[%(trace_id)s] %(message)s"))
    logger.info("no filter")
    assert stream.getvalue() == "[] no filter\n"


def test_sampling_filter_follows_the_trace(logger: logging.Logger) -> None:
    f = SamplingFilter(probability=0.0)
    stream = capture(logger, logging.Formatter("%(message)s"), f)
    tracebridge.start(sampling=ParentBased(TraceIdRatio(0.5)))
    try:
        kept_traces = 0
        for i in range(200):
            with tracebridge.span("r", level=2) as s:
                logger.info("in %d", i)
                kept_traces += s.sampled
        logger.info("outside: probability 0")
        logger.warning("warnings always pass")
    finally:
        session = tracebridge.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == kept_traces + 1 and lines[-1] == "warnings always pass"
    assert f.dropped == 200 - kept_traces + 1
    assert session.stats.dropped["sampled_out"]["log"] == f.dropped


def test_rate_limit_filter(logger: logging.Logger) -> None:
    f = RateLimitFilter(1000.0, burst=3)
    now = [time.monotonic()]
    f._limiter._clock = lambda: now[0]  # (time stands still during the flood, however slow the machine)
    stream = capture(logger, logging.Formatter("%(message)s"), f)
    for _ in range(10):
        logger.warning("disk %s full", "/var")
    logger.warning("other message")
    now[0] += 1.0  # the flood is over
    logger.warning("disk %s full", "/var")
    assert stream.getvalue().splitlines() == [
        "disk /var full",
        "disk /var full",
        "disk /var full",
        "other message",
        "suppressed 7 similar records (disk %s full)",
        "disk /var full",
    ]
    assert f.dropped == 7


def test_rate_limit_summaries_when_floods_outlive_their_key_or_the_session(
    logger: logging.Logger, trace_path: Path
) -> None:
    other = logging.getLogger(logger.name + ".other")
    f = RateLimitFilter(1000.0, burst=1, max_keys=1)
    stream = capture(logger, logging.Formatter("%(name)s %(levelname)s %(trace_id)s %(message)s"))
    logger.addHandler(PerfettoHandler(trace_path))
    # (Only this test's handlers: pytest puts its own capturing handlers on loggers that do not
    # propagate, and keeps them from test to test.)
    for h in logger.handlers[-2:]:
        h.addFilter(TraceContextFilter())
        h.addFilter(f)
    with tracebridge.span("request", level=2) as s:
        for _ in range(4):
            other.error("a %s", "flood")  # a child logger: its records reach these handlers
        logger.info("evicts the flood's key")
        for _ in range(3):
            logger.debug("b")
    tracebridge.stop()  # the flood still going on is summed up before the trace ends
    tid = f"{s.trace_id:032x}"
    assert stream.getvalue().splitlines() == [
        f"{other.name} ERROR {tid} a flood",
        f"{other.name} ERROR {tid} suppressed 3 similar records (a %s)",
        f"{logger.name} INFO {tid} evicts the flood's key",
        f"{logger.name} DEBUG {tid} b",
        f"{logger.name} DEBUG {tid} suppressed 2 similar records (b)",
    ]
    logs = [e for e in tracebridge.read(trace_path) if e.kind == "log"]
    assert [e.metadata.get("suppressed") for e in logs] == [None, 3, None, None, 2]
    f.flush()  # nothing left to report
    assert len(stream.getvalue().splitlines()) == 5


class FakeClock:
    """Spans' clock in a test: a microsecond a read, and ``pause(seconds)`` (a busy machine cannot make a
    quick span slow). It starts well after the session's start."""

    def __init__(self) -> None:
        self.t = time.perf_counter_ns() + 10**12

    def __call__(self) -> int:
        self.t += 1_000
        return self.t

    def pause(self, seconds: float) -> None:
        self.t += int(seconds * 1e9)


def test_trace_lines(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest) -> None:
    from tracebridge import spans

    clock = FakeClock()
    spans.set_clock(clock)
    request.addfinalizer(lambda: spans.set_clock(None))
    cfg = tracebridge.configure(log_lines=True, slow={"db.*": "2ms"}, anomaly_after=3)
    assert cfg.log_lines == {"slow": {"db.*": "2ms"}, "anomaly_after": 3}
    try:
        tracebridge.start(level=2)
        with caplog.at_level(logging.INFO, logger="tracebridge.trace"):
            with tracebridge.span("load_config", level=2, path="app.toml"):
                pass
            with tracebridge.span("db.query", level=2):
                clock.pause(0.003)
            for _ in range(4):
                with tracebridge.span("step", level=2):
                    pass
            with tracebridge.span("step", level=2):
                clock.pause(0.01)
            with tracebridge.span("verbose", level=3):
                pass
            with pytest.raises(ValueError), tracebridge.span("charge", level=1):
                raise ValueError("declined")
            tracebridge.stop()
    finally:
        tracebridge.configure(log_lines=None)
    by_name = {r.trace_event.name: r for r in caplog.records}
    assert by_name["load_config"].getMessage() == "[TRACE] load_config (1000ns) {path=app.toml}"
    slow = by_name["db.query"]
    assert slow.levelno == logging.WARNING and slow.getMessage().startswith("[SLOW] db.query (")
    assert slow.getMessage().endswith("over 2000us")
    anomaly = [r for r in caplog.records if r.getMessage().startswith("[ANOMALY] step")]
    (slowest,) = anomaly  # the 10 ms step, and only it
    assert slowest.trace_event.duration_ns == 10_001_000 and slowest.levelno == logging.WARNING
    failed = by_name["charge"]
    assert failed.levelno == logging.ERROR
    assert "failed: ValueError: declined" in failed.getMessage()
    assert "test_trace_lines" in failed.getMessage().splitlines()[-1]
    assert "verbose" not in by_name
    assert by_name["load_config"].threadName == "MainThread"
    assert len(by_name["load_config"].trace_id) == 32


def test_trace_lines_show_the_collectors_pauses_only_when_long(caplog: pytest.LogCaptureFixture) -> None:
    from tracebridge._model import GC_CATEGORY, GC_TRACK, Event
    from tracebridge.sinks.lines import TraceLines

    def pause(ms: int) -> Event:
        md = {"generation": 2, "collected": 40}
        return Event(
            "span", "GC gen 2", 0, ms * 1_000_000, 1, md, 7, "MainThread", None, (GC_CATEGORY,), GC_TRACK
        )

    work = Event("span", "work", 0, 1_000, 1, {}, 7, "MainThread")
    with caplog.at_level(logging.INFO, logger="tracebridge.trace"):
        lines = TraceLines(anomaly_after=1)  # (a pause is judged by gc_pause, never as an anomaly)
        lines.observe([pause(5), pause(10), pause(25), work], 0)
        TraceLines(gc_pause=None).observe([pause(25)], 0)
        TraceLines(gc_pause="1ms").observe([pause(5)], 0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "[SLOW] GC gen 2 (25ms) {generation=2, collected=40} over 10ms"),
        ("INFO", "[TRACE] work (1000ns)"),
        ("WARNING", "[SLOW] GC gen 2 (5000us) {generation=2, collected=40} over 1000us"),
    ]
    assert "GC gen 2" not in lines._means


def test_trace_line_options_are_checked_at_setup() -> None:
    with pytest.raises(ValueError, match="log_lines slow"):
        tracebridge.configure(log_lines=True, slow={"db.*": "fast"})
    with pytest.raises(ValueError, match="log_lines=False with trace-line options"):
        tracebridge.configure(log_lines=False, slow="5ms")
    with pytest.raises(ValueError, match="unknown option 'slowest'"):
        tracebridge.configure(log_lines=True, slowest="5ms")
    assert tracebridge.configure().log_lines is None  # nothing was changed


def test_trace_lines_without_a_session(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tracebridge.trace"):
        tracebridge.configure(log_lines=True)
        try:
            with tracebridge.span("alone", level=2):
                pass
            tracebridge.flush()
        finally:
            tracebridge.configure(log_lines=None)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["[TRACE] alone"]
    assert tracebridge._recorder.runtime.RT.session is None


def test_trace_formatter_options(logger: logging.Logger) -> None:
    from tracebridge._model import ErrorInfo, Event, Frame

    ev = Event(
        "span", "op", 0, 1_250_000, 2, {"k": "v"}, 7, "worker", ErrorInfo("E", "m", (Frame("f", "a.py", 3),))
    )
    record = logging.LogRecord("tracebridge.trace", logging.ERROR, "", 0, "ignored", (), None)
    record.trace_event = ev
    record.trace_tag = "[TRACE]"
    record.trace_note = ""
    text = TraceFormatter("%(message)s", include_thread=True, include_metadata=False).format(record)
    assert text == "[TRACE] op (1250us) [worker:7] failed: E: m\n  f (a.py:3)"
    try:
        raise RuntimeError("x")
    except RuntimeError:
        import sys

        record2 = logging.LogRecord("a", logging.ERROR, "", 0, "oops", (), sys.exc_info())
    rendered = TraceFormatter("%(message)s", compact_tracebacks=True).format(record2)
    assert rendered.splitlines()[0] == "oops" and rendered.splitlines()[-1] == "RuntimeError: x"
    assert "test_trace_formatter_options" in rendered.splitlines()[-2]
    # By default an ordinary record keeps Python's traceback, as tools and people read it (and the
    # compact one above did not stay on the record for other handlers).
    assert record2.exc_text is None
    assert TraceFormatter("%(message)s").format(record2) == logging.Formatter("%(message)s").format(record2)
    lines = TraceFormatter("%(message)s").format(record2).splitlines()
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: x"
    assert lines[2].startswith(f'  File "{__file__}", line ') and lines[2].endswith(
        ", in test_trace_formatter_options"
    )


def test_a_record_that_does_not_format_arrives_marked(logger: logging.Logger, trace_path: Path) -> None:
    class NoStr:
        def __str__(self) -> str:
            raise ValueError("no")

    logger.handlers.clear()  # (pytest's capturing handlers would raise on such records)
    stream = capture(logger, TraceFormatter("%(levelname)s %(message)s"))
    logger.addHandler(PerfettoHandler(trace_path))
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        logger.warning("%d items for %s", "many", "ann")
        logger.info(NoStr())
        logger.info("fine %s", "after")
    assert "Logging error" not in errors.getvalue()
    assert stream.getvalue().splitlines() == [
        "WARNING '%d items for %s' % ('many', 'ann') [format error: TypeError: %d format: a real number is "
        "required, not str]",
        "INFO '<unrepresentable NoStr: ValueError>' % () [format error: ValueError: no]",
        "INFO fine after",
    ], stream.getvalue()
    tracebridge.stop()
    logs = [ev for ev in tracebridge.read(trace_path) if ev.kind == "log"]
    assert [ev.name.split(" [format error")[0] for ev in logs[:1]] == ["'%d items for %s' % ('many', 'ann')"]
    assert logs[0].metadata["format_error"].startswith("TypeError: %d format")
    assert logs[2].name == "fine after" and len(logs) == 3


def test_the_formatter_formats_a_message_once() -> None:
    """TraceFormatter formats a record's message once (it used to format it a second time to find out
    whether it formats); a record whose format string fails elsewhere still fails as it would."""
    formatted = []

    class Counted:
        def __str__(self) -> str:
            formatted.append(1)
            return "ann"

    record = logging.LogRecord("shop", logging.INFO, "/srv/app.py", 9, "user %s", (Counted(),), None)
    assert TraceFormatter("%(levelname)s %(message)s").format(record) == "INFO user ann"
    assert len(formatted) == 1
    with pytest.raises(ValueError, match="nothing_like_this"):
        TraceFormatter("%(nothing_like_this)s").format(record)


def test_chained_exceptions_keep_their_causes(logger: logging.Logger, trace_path: Path) -> None:
    def load() -> None:
        try:
            {}["app.toml"]
        except KeyError as exc:
            raise RuntimeError("config unreadable") from exc

    tracebridge.start(level=2, output=trace_path)
    with pytest.raises(RuntimeError), tracebridge.span("load_config"):
        load()
    tracebridge.stop()
    (span,) = tracebridge.read(trace_path)
    assert span.error is not None and span.error.type == "RuntimeError" and span.error.explicit_cause
    assert span.error.cause is not None and span.error.cause.type == "KeyError"
    assert any(f.function == "load" for f in span.error.cause.frames)
    from tracebridge.sinks.lines import trace_line

    text = trace_line(span)
    assert "failed: RuntimeError: config unreadable" in text.splitlines()[0]
    assert "caused by KeyError: 'app.toml'" in text.splitlines()
    try:
        try:
            load()
        finally:
            pass
    except RuntimeError:
        import sys

        record = logging.LogRecord("a", logging.ERROR, "", 0, "oops", (), sys.exc_info())
    lines = TraceFormatter("%(message)s", compact_tracebacks=True).format(record).splitlines()
    assert lines[-1] == "RuntimeError: config unreadable" and "(which caused:)" in lines
    assert lines[lines.index("(which caused:)") - 1] == "KeyError: 'app.toml'"


def test_record_from_log_survives_bad_input() -> None:
    class NoStr:
        def __str__(self) -> str:
            raise ValueError("no")

    bad_args = logging.LogRecord("l", logging.INFO, "f.py", 1, "%d items", ("many",), None)
    rec = record_from_log(bad_args)
    assert rec.name.startswith("'%d items' % ('many',) [format error: TypeError: ")
    assert rec.metadata is not None and "format_error" in rec.metadata
    rec = record_from_log(logging.LogRecord("l", logging.INFO, "f.py", 1, NoStr(), (), None))
    assert "unrepresentable" in rec.name
    rec = record_from_log(logging.LogRecord("l", logging.INFO, "f.py", 1, "bad \udcff text", (), None))
    assert rec.name == "bad \udcff text"  # repaired when written (see tests/failure)


def test_logged_exception_fails_the_span_even_when_sampled_out(logger: logging.Logger) -> None:
    logger.addFilter(TraceContextFilter())
    tracebridge.start(sampling=ParentBased(TraceIdRatio(0.0)))
    try:
        with tracebridge.span("handled", level=2) as dropped:
            try:
                int("x")
            except ValueError:
                logger.exception("bad number")
        with tracebridge.span("warned", level=2):
            try:
                int("y")
            except ValueError:
                logger.warning("only a warning", exc_info=True)  # not a failure
        with tracebridge.span("off", level=9) as off:
            off.fail(ValueError("ignored"))
    finally:
        session = tracebridge.stop()
    (span,) = [e for e in session.events if e.kind == "span"]
    assert span.name == "handled" and span.error is not None and span.error.type == "ValueError"
    assert span.error.frames[-1].function == "test_logged_exception_fails_the_span_even_when_sampled_out"
    dropped.fail(KeyError("too late"))  # ended: ignored
    assert span.error.type == "ValueError"


def test_context_fields_follow_the_current_span(logger: logging.Logger) -> None:
    stream = capture(
        logger, TraceFormatter("%(span_name)s %(span_id)s")
    )  # no filter: the formatter adds them
    tracebridge.start(level=2)
    try:
        with tracebridge.span("outer", level=2) as outer:
            logger.info("a")
            with tracebridge.span("inner", level=2) as inner:
                logger.info("b")
                logger.info("b")
            logger.info("a")
        logger.info("none")
    finally:
        tracebridge.stop()
    o, i = f"outer {outer.span_id:016x}", f"inner {inner.span_id:016x}"
    assert stream.getvalue().splitlines() == [o, i, i, o, " "]


def test_setup_errors_name_what_the_user_wrote() -> None:
    with pytest.raises(ValueError, match=r"^RateLimitFilter\(per_second\) must be a positive number"):
        RateLimitFilter(per_second=0)
    with pytest.raises(ValueError, match=r"^scrub must be a regular expression"):
        tracebridge.configure(scrub=5)
    with pytest.raises(ValueError, match=r"^RateLimitFilter\(key\) must be 'msg', 'logger' or a callable"):
        RateLimitFilter(1.0, key="template")


def test_perfetto_handler_emits_without_its_lock(logger: logging.Logger, trace_path: Path) -> None:
    # With on_full="block" a record may wait for the writer; the writer's trace lines may reach this
    # handler: so the handler must not hold (or need) its lock around emit.
    import threading

    handler = PerfettoHandler(trace_path)
    logger.addHandler(handler)
    handler.addFilter(lambda r: "secret" not in r.getMessage())
    handler.acquire()  # another party holds the lock
    try:
        done = threading.Event()

        def log() -> None:
            logger.info("kept %d", 1)
            logger.info("a secret")  # filtered out, as Handler.handle does
            done.set()

        t = threading.Thread(target=log)
        t.start()
        t.join(30)
        assert done.is_set()
    finally:
        handler.release()
    tracebridge.stop()
    assert [e.name for e in tracebridge.read(trace_path) if e.kind == "log"] == ["kept 1"]


@pytest.mark.skipif(not tracebridge.accelerated, reason="the compiled accelerator is not in use here")
def test_both_paths_make_the_same_record_of_a_log_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled record_from_log takes plain records and leaves the rest (format errors, extra fields,
    failures, ids a filter set, subclasses, places and levels not seen yet) to the Python code; both
    make the same Record."""
    import sys

    from tracebridge import logging as tl
    from tracebridge._model import Record

    monkeypatch.setattr(tl, "now_ns", lambda: 12_345)
    compiled = tl._fast_record
    assert compiled is not None

    class Sub(logging.LogRecord):
        pass

    def make(msg: object, args: object = (), *, level: int = logging.INFO, line: int = 10, **extra: object):
        kind = extra.pop("kind", logging.LogRecord)
        exc = extra.pop("exc", None)
        rec = kind("shop", level, "/srv/app.py", line, msg, args, exc, "handle")  # type: ignore[operator]
        rec.__dict__.update(extra)
        return rec

    try:
        raise KeyError("k")
    except KeyError:
        failure = sys.exc_info()
    cases = [
        lambda: make("order %d loaded from %s", (7, "db")),
        lambda: make("plain message"),
        lambda: make("%(n)s items", ({"n": 3},)),
        lambda: make("bad %d", ("x",)),  # does not format
        lambda: make("with extra", user="ann"),
        lambda: make("failed", exc=failure),
        lambda: make("ids set", trace_id="0" * 31 + "1", span_id="0" * 15 + "2"),
        lambda: make("sub", kind=Sub),
        lambda: make("elsewhere", line=11),  # a place not seen yet
        lambda: make("custom level", level=25),
        lambda: make(12345),  # not a string
    ]
    fields = [f for f in Record.__slots__ if f != "error"]
    taken = 0
    for case in cases:
        with tracebridge.span("outer") if case is cases[1] else contextlib.nullcontext():
            made = []
            for fast in (compiled, None, compiled):  # (the Python code fills the caches the second takes)
                monkeypatch.setattr(tl, "_fast_record", fast)
                made.append(tl.record_from_log(case()))
        for rec in made[1:]:
            assert [getattr(rec, f) for f in fields] == [getattr(made[0], f) for f in fields], case
            assert (rec.error is None) == (made[0].error is None)
        taken += (
            compiled(case(), tl._frames, tl._levels, tl.trace_context, tl.now_ns, tl._PLAIN_FIELDS)
            is not None
        )
    assert taken == 5  # plain, no args (in a span), a mapping, a place and a level once seen


@pytest.mark.skipif(not tracebridge.accelerated, reason="the compiled accelerator is not in use here")
def test_the_compiled_record_asks_for_the_context_only_where_there_may_be_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No span current and OpenTelemetry not loaded: no ids, without calling the context function;
    inside a span, or with OpenTelemetry loaded, it is asked (and its ids are the record's)."""
    from tracebridge import logging as tl

    def make() -> logging.LogRecord:
        return logging.LogRecord("shop", logging.INFO, "/srv/app.py", 78, "paid %d", (3,), None, "pay")

    tl.record_from_log(make())  # (the place and the level cached)
    asked = []

    def context() -> tuple[int, int, str, bool] | None:
        asked.append(1)
        return tl.trace_context()

    def record() -> Record:
        rec = tl._fast_record(make(), tl._frames, tl._levels, context, tl.now_ns, tl._PLAIN_FIELDS)
        assert rec is not None
        return rec  # type: ignore[no-any-return]

    otel = sys.modules.get("opentelemetry.trace")
    monkeypatch.delitem(sys.modules, "opentelemetry.trace", raising=False)
    rec = record()
    assert (rec.trace_id, rec.span_id, len(asked)) == (0, 0, 0)
    tracebridge.start(level=2)
    try:
        with tracebridge.span("pay") as s:
            rec = record()
            assert (rec.trace_id, rec.span_id, len(asked)) == (s.trace_id, s.span_id, 1) and s.trace_id
    finally:
        tracebridge.stop()
    if otel is not None:
        monkeypatch.setitem(sys.modules, "opentelemetry.trace", otel)
        rec = record()
        assert (rec.trace_id, rec.span_id, len(asked)) == (0, 0, 2)


@pytest.mark.skipif(not tracebridge.accelerated, reason="the compiled accelerator is not in use here")
def test_the_compiled_record_survives_what_python_code_does_meanwhile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Formatting and the clock run Python code: the caches may be cleared and the record changed
    meanwhile (another thread logging from a 4097th place clears the cache of places), Ctrl-C must go
    through, a message is formatted once, and a replaced LogRecord.getMessage is used."""
    from tracebridge import logging as tl

    def make(msg: str, args: tuple[object, ...]) -> logging.LogRecord:
        return logging.LogRecord("shop", logging.INFO, "/srv/app.py", 77, msg, args, None, "handle")

    tl.record_from_log(make("warm %d", (1,)))  # (the place and the level cached)

    def clearing_clock() -> int:
        tl._frames.clear()
        tl._levels.clear()
        return 5

    monkeypatch.setattr(tl, "now_ns", clearing_clock)
    for _ in range(50):
        rec = tl.record_from_log(make("order %d", (2,)))
        assert rec.source == tracebridge.Frame("handle", "/srv/app.py", 77) and rec.level == 2
        tl.record_from_log(make("warm %d", (1,)))  # (cached again, for the compiled path)

    class Counting:
        calls = 0

        def __init__(self, record: logging.LogRecord, interrupt: bool = False) -> None:
            self.record, self.interrupt = record, interrupt

        def __str__(self) -> str:
            Counting.calls += 1
            if self.interrupt:
                raise KeyboardInterrupt
            self.record.msg = "replaced %s"  # (the record changes under the formatting)
            return "value"

    monkeypatch.setattr(tl, "now_ns", lambda: 5)
    tl.record_from_log(make("warm %d", (1,)))  # (cached again: the records below take the compiled path)
    assert tl._fast_record(
        make("warm %d", (1,)), tl._frames, tl._levels, tl.trace_context, tl.now_ns, tl._PLAIN_FIELDS
    )
    rec = make("placed %s", ())
    rec.args = (Counting(rec),)
    made = tl.record_from_log(rec)
    assert made.name == "placed value" and Counting.calls == 1
    assert made.metadata == {"logger": "shop", "message_template": "replaced %s"}  # (read after, as Python)
    rec = make("placed %s", ())
    rec.args = (Counting(rec, interrupt=True),)
    with pytest.raises(KeyboardInterrupt):
        tl.record_from_log(rec)
    assert Counting.calls == 2

    def braces(self: logging.LogRecord) -> str:
        return str(self.msg).format(*self.args)

    monkeypatch.setattr(logging.LogRecord, "getMessage", braces)
    assert tl.record_from_log(make("{} items", (3,))).name == "3 items"
