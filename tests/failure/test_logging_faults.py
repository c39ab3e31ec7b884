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
    assert nostr.name.startswith("<unrepresentable NoStr")
    assert badargs.name == "%d widgets % ('not a number',)" and "format_error" in badargs.metadata
    assert mapping.name == "{'a': 1}"


def test_a_handler_whose_setup_failed_is_left_quiet(tmp_path: Path) -> None:
    before = _safety.error_counts().get("PerfettoHandler.flush", 0)
    tracebridge.start(level=2, output=tmp_path / "a.perfetto-trace")
    try:
        with pytest.raises(ValueError, match="already recording") as failed:
            PerfettoHandler(tmp_path / "b.perfetto-trace")  # logging has registered it already
    finally:
        tracebridge.stop()
    assert failed.value.__traceback__ is not None  # (which keeps the half-made handler alive)
    logging.shutdown()  # flushes every handler logging knows, the half-made one too
    assert _safety.error_counts().get("PerfettoHandler.flush", 0) == before
