"""Logging under faults: recursion, reconfiguration while threads log, exit, and hostile records."""

from __future__ import annotations

import logging
import logging.config
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import tracebridge
from tracebridge import _safety
from tracebridge.logging import PerfettoHandler
from tracebridge.reading import read_trace


def test_logging_from_inside_emit_does_not_recurse(trace_path: Path) -> None:
    log = logging.getLogger("recursive")
    log.propagate = False
    handler = PerfettoHandler(trace_path)
    log.addHandler(handler)

    class Chatty:
        def __repr__(self) -> str:
            log.warning("repr of Chatty was asked for")  # logs while the handler emits
            return "Chatty()"

    try:
        log.warning("with a chatty extra", extra={"thing": Chatty()})
        tracebridge.stop()
    finally:
        log.removeHandler(handler)
        handler.close()
    (event,) = tracebridge.read(trace_path)
    assert event.metadata["thing"] == "Chatty()"


def _config(path: Path) -> dict[str, object]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"count": {"()": "test_logging_faults.CountingFilter"}},
        "handlers": {
            "trace": {
                "class": "tracebridge.logging.PerfettoHandler",
                "filename": str(path),
                "filters": ["count"],
            }
        },
        "loggers": {"reconfigured": {"handlers": ["trace"], "level": "INFO", "propagate": False}},
    }


class CountingFilter(logging.Filter):
    """Counts the records that reach the PerfettoHandler."""

    lock = threading.Lock()
    passed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        with CountingFilter.lock:
            CountingFilter.passed += 1
        return True


def test_dictconfig_reapplied_while_threads_log(trace_path: Path) -> None:
    sys.modules.setdefault("test_logging_faults", sys.modules[__name__])
    CountingFilter.passed = 0
    handlers: list[logging.Handler] = []
    logging.config.dictConfig(_config(trace_path))
    handlers += logging.getLogger("reconfigured").handlers
    stop = threading.Event()

    def spam(k: int) -> None:
        log = logging.getLogger("reconfigured")
        i = 0
        while not stop.is_set():
            log.info("thread %d record %d", k, i)
            i += 1

    threads = [threading.Thread(target=spam, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(10):
            logging.config.dictConfig(_config(trace_path))
            handlers += logging.getLogger("reconfigured").handlers
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "deadlock"
    session = tracebridge.stop()
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
    trace = read_trace(trace_path)
    assert trace.problems == []
    logs = sum(1 for e in trace.events if e.kind == "log")
    dropped = sum(getattr(h, "dropped", 0) for h in handlers)
    lost = session.stats.total_dropped
    # Every record that reached a PerfettoHandler is in the trace or counted.
    assert logs + dropped + lost == CountingFilter.passed
    assert logs > 0


def test_logging_shutdown_at_exit_flushes_the_trace(tmp_path: Path) -> None:
    path = tmp_path / "exit.perfetto-trace"
    code = f"""
        import logging, logging.config, tracebridge
        tracebridge.configure(flush_interval=30)
        logging.config.dictConfig({{
            "version": 1,
            "handlers": {{"t": {{
                "class": "tracebridge.logging.PerfettoHandler", "filename": {str(path)!r},
            }}}},
            "root": {{"handlers": ["t"], "level": "INFO"}},
        }})
        logging.getLogger("app").info("last words")
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == ""
    assert [e.name for e in tracebridge.read(path)] == ["last words"]


def test_hostile_records_arrive_marked(trace_path: Path) -> None:
    log = logging.getLogger("hostile")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    handler = PerfettoHandler(trace_path)
    log.addHandler(handler)

    class NoStr:
        def __str__(self) -> str:
            raise RuntimeError("cannot")

    try:
        log.info("lone \udcff surrogate")
        log.info("x" * 10_000_000)
        log.info(NoStr())
        log.info("%d widgets", "not a number")
        log.info({"a": 1})
        tracebridge.stop()
    finally:
        log.removeHandler(handler)
        handler.close()
    events = tracebridge.read(trace_path)
    assert len(events) == 5
    surrogate, huge, nostr, badargs, mapping = events
    assert surrogate.name == "lone \ufffd surrogate"
    kept = huge.name.index("…")
    assert huge.name == "x" * kept + f"…[+{10_000_000 - kept} chars]" and kept < 100_000
    assert nostr.name == "'<unrepresentable NoStr: RuntimeError>' % () [format error: RuntimeError: cannot]"
    assert badargs.name.startswith("'%d widgets' % ('not a number',) [format error: TypeError: ")
    assert "format_error" in badargs.metadata
    assert mapping.name == "{'a': 1}"


def test_a_handler_that_cannot_work_is_left_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _safety.error_counts().get("PerfettoHandler.flush", 0)
    handler = PerfettoHandler(tmp_path / "missing" / "dir" / "a.perfetto-trace")  # cannot be created
    assert handler.session is None
    with pytest.raises(ValueError, match="level must be an integer"):
        PerfettoHandler(tmp_path / "b.perfetto-trace", trace_level=0)  # (logging has registered it already)
    logging.shutdown()  # flushes every handler logging knows, the half-made one too
    assert _safety.error_counts().get("PerfettoHandler.flush", 0) == before
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "the file cannot be written (FileNotFoundError" in lines[0]


def test_a_handler_goes_on_across_stop_and_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "again.perfetto-trace"
    log = logging.getLogger("again")
    log.propagate = False
    handler = PerfettoHandler(path)
    log.addHandler(handler)
    try:
        log.warning("first")
        tracebridge.stop()
        log.warning("between")  # nothing records the file: counted, said once
        log.warning("between again")
        assert handler.dropped == 2
        session = tracebridge.start(output=path)
        log.warning("second")
        assert handler.session is session
        tracebridge.stop()
    finally:
        log.removeHandler(handler)
    assert [e.name for e in tracebridge.read(path)] == ["second"]
    err = capsys.readouterr().err
    assert err.count("the recording stopped") == 1 and str(path) in err


def test_two_handlers_for_two_files_never_abort_dictconfig(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.perfetto-trace", tmp_path / "b.perfetto-trace"
    bad = tmp_path / "no" / "such" / "dir.perfetto-trace"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "a": {"class": "tracebridge.logging.PerfettoHandler", "filename": str(a)},
            "b": {"class": "tracebridge.logging.PerfettoHandler", "filename": str(b)},
            "0bad": {"class": "tracebridge.logging.PerfettoHandler", "filename": str(bad)},  # (built first)
            "console": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
        },
        "loggers": {"two": {"handlers": ["a", "b", "0bad", "console"], "level": "INFO", "propagate": False}},
    }
    logging.config.dictConfig(config)  # (no exception: every handler is installed)
    log = logging.getLogger("two")
    try:
        assert [type(h).__name__ for h in log.handlers] == [
            "PerfettoHandler",
            "PerfettoHandler",
            "PerfettoHandler",
            "StreamHandler",
        ]
        log.info("hello")
        session = tracebridge.stop()
    finally:
        for h in list(log.handlers):
            log.removeHandler(h)
    out, err = capsys.readouterr()
    assert out == "hello\n"  # the console handler of the same config works
    assert [e.name for e in tracebridge.read(a)] == ["hello"]
    assert not b.exists()
    assert session.stats.dropped["other_file"] == {"log": 2}  # b's and bad's, in the stats of what ran
    lines = err.splitlines()
    assert len(lines) == 2, lines
    assert f"for {bad} writes nothing: the file cannot be written (FileNotFoundError" in lines[0]
    assert f"for {b} writes nothing: tracebridge is recording into {a}" in lines[1]


def test_a_handler_in_a_forked_child_records_into_the_trace(tmp_path: Path) -> None:
    path = tmp_path / "logs.perfetto-trace"
    code = f"""
        import logging, os
        import tracebridge
        from tracebridge.logging import PerfettoHandler
        logging.basicConfig(handlers=[PerfettoHandler({str(path)!r})], level=logging.INFO)
        logging.info("in the parent")
        pid = os.fork()
        if pid == 0:
            logging.info("in the child")
            tracebridge.stop()
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    pid = int(result.stdout)
    trace = read_trace(path)
    assert sorted((e.name, e.thread_id == pid) for e in trace.events) == [
        ("in the child", True),
        ("in the parent", False),
    ]
    assert trace.stats is not None and trace.stats.recorded["log"] == 2


def test_a_handler_given_a_session_records_in_its_forked_children(tmp_path: Path) -> None:
    path = tmp_path / "given.perfetto-trace"
    code = f"""
        import logging, os
        import tracebridge
        from tracebridge.logging import PerfettoHandler
        session = tracebridge.start(output={str(path)!r})
        logging.basicConfig(handlers=[PerfettoHandler(session)], level=logging.INFO)
        logging.info("in the parent")
        pid = os.fork()
        if pid == 0:
            logging.info("in the child")
            tracebridge.stop()
            os._exit(0)
        os.waitpid(pid, 0)
        print(tracebridge.stop().stats.dropped)
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.strip() == "{}"
    assert sorted(e.name for e in read_trace(path).events) == ["in the child", "in the parent"]
