"""The public lifecycle: ``configure``, ``start``, ``stop``, ``flush``, ``shutdown``, ``stats``, the
implicit sessions that PerfettoHandler, trace lines and the OpenTelemetry bridge start, and the exit hook."""

from __future__ import annotations

import atexit
import inspect
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .. import _hooks, _safety
from .._config import Config
from .._environment import EnvironmentSettingError, from_environment
from .._model import (
    Event,
    Stats,
)
from ..sampling.filters import Directives
from ..sampling.pipeline import Pipeline
from ..sampling.samplers import AlwaysOff
from ..sinks.lines import TraceLines
from . import exits, runtime_metrics
from .runtime import (
    RT,
    all_threads,
    soft_limit,
)
from .session import OutputFormat, Session, default_output_format

if TYPE_CHECKING:
    from ..sinks import Sink

_session_lock = threading.RLock()


def renew_lock_after_fork() -> None:
    """In a forked child: the lock another thread of the parent may have held is made anew."""
    global _session_lock
    _session_lock = threading.RLock()


#: Options of trace lines that ``configure`` also takes by name, beside ``log_lines=True``.
_LINE_OPTIONS = frozenset(inspect.signature(TraceLines.__init__).parameters) - {"self"}


def configure(**options: Any) -> Config:
    """Change process-wide options (see :class:`Config`); returns the new configuration.

    The options of trace lines may also be given by name: ``configure(log_lines=True, slow={"db.*":
    "5ms", "*": "100ms"})`` is ``configure(log_lines={"slow": {...}})``. Unknown names and bad values
    raise ``ValueError`` naming the option.
    """
    with _session_lock:
        known = {f for f in Config.__dataclass_fields__}
        line_options = {k: options.pop(k) for k in list(options) if k in _LINE_OPTIONS and k not in known}
        if line_options:  # configure(log_lines=True, slow={...}): options of the trace lines
            base = options.get("log_lines", RT.config.log_lines)
            if base is False and "log_lines" in options:
                raise ValueError(f"log_lines=False with trace-line options {sorted(line_options)}")
            options["log_lines"] = {**(base if isinstance(base, dict) else {}), **line_options}
        for key in options:
            if key not in known:
                names = ", ".join(sorted(known | _LINE_OPTIONS))
                raise ValueError(f"unknown option {key!r}; known options: {names}")
        cfg = replace(RT.config, **options)
        cfg.validate()
        RT.config = cfg
        RT.buffer_cap = cfg.thread_buffer
        RT.buffer_soft = soft_limit(cfg.thread_buffer)
        RT.block = cfg.on_full == "block"
        _safety.set_strict(cfg.strict)
        if "otel" in options:
            _otel_changed(cfg.otel)
        if "log_lines" in options:
            _lines_changed(cfg.trace_lines())
        if "runtime" in options and RT.session is not None:
            (runtime_metrics.attach if cfg.runtime else runtime_metrics.detach)(RT.session)
        return cfg


def _validate_level(level: Any) -> int:
    if not isinstance(level, int) or isinstance(level, bool) or level < 1:
        raise ValueError(f"level must be an integer >= 1 (1 critical, 2 info, 3+ verbose), got {level!r}")
    return level


def start(
    level: int | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    format: OutputFormat | None = None,
    sampling: Any = None,
    sink: Callable[[Session], Sink] | None = None,
) -> Session:
    """Start recording events of ``level`` and below (default 2).

    ``output`` is a trace file (``.json`` for Chrome JSON, anything else for Perfetto protobuf) or ``None``
    to keep events in memory (``Session.events``). ``sampling`` is a stage, a list of stages or a
    :class:`~tracebridge.sampling.Pipeline` (default: ``configure(sampling=...)``). Starting while a
    session is active, a bad level, bad sampling and an unwritable path raise at once.

    What the call leaves out comes from the environment when set: ``TRACEBRIDGE_LEVEL``,
    ``TRACEBRIDGE_OUTPUT``, ``TRACEBRIDGE_SAMPLING`` (``ratio:0.1,ratelimit:100``; see
    ``tracebridge._environment``), ``TRACEBRIDGE_LOG_LINES``, ``TRACEBRIDGE_RUNTIME``,
    ``TRACEBRIDGE_FILTER``. A bad value there is one line on stderr naming the variable, and the session
    records nothing (it does not fail the program).

    .. versionadded:: 0.1
    """
    try:
        env = from_environment()
    except EnvironmentSettingError as exc:
        with _session_lock:
            current = RT.session
            if current is not None and not current.implicit:
                raise _already_active(current) from None
            if current is not None:  # (a handler's recording goes on as it was)
                print(f"tracebridge: {exc}; start() changes nothing", file=sys.stderr)
                return current
            print(f"tracebridge: {exc}; tracebridge records nothing", file=sys.stderr)
            nothing = Pipeline([AlwaysOff()], keep_critical=False, keep_failures=False)
            return _begin(_validate_level(level or 2), None, "none", nothing)
    if level is None:
        level = env.level or 2
    if output is None and format is None and sink is None:
        output = env.output
    if sampling is None and env.sampling:
        sampling = env.sampling
    if env.log_lines and RT.config.trace_lines() is None:
        configure(log_lines=True)
    if env.runtime and not RT.config.runtime:
        configure(runtime=True)
    level = _validate_level(level)
    fmt = format or default_output_format(output)
    if fmt not in ("perfetto", "json", "memory", "none"):
        raise ValueError(f"format must be 'perfetto', 'json', 'memory' or 'none', got {fmt!r}")
    if fmt in ("perfetto", "json") and output is None:
        raise ValueError(f"format={fmt!r} needs an output path")
    with _session_lock:
        pipeline = session_pipeline(sampling if sampling is not None else RT.config.sampling)
        current = RT.session
        if current is not None:
            if not current.implicit:
                raise _already_active(current)
            if current.format != "none":
                if output is None or current.path is None or not _same_file(current.path, output):
                    raise RuntimeError(
                        f"tracebridge is already recording into {current.path} ({current.started_by} "
                        f"started it); start(output={str(current.path)!r}) joins that recording, or stop() "
                        "it first"
                    )
                return _adopt(current, level, pipeline if sampling is not None else None)
            _stop(None, resume=False)  # a session that only fed trace lines: this one takes over
        return _begin(level, output, fmt, pipeline, sink)


def _already_active(current: Session) -> RuntimeError:
    return RuntimeError(
        f"a tracebridge session is already active ({current!r}); call tracebridge.stop() first"
    )


def _begin(
    level: int,
    output: str | os.PathLike[str] | None,
    fmt: OutputFormat,
    pipeline: Pipeline | None,
    sink: Callable[[Session], Sink] | None = None,
    implicit: bool = False,
) -> Session:
    if pipeline is None and RT.bridge is not None:
        pipeline = Pipeline([])  # the OpenTelemetry bridge works on the pipeline path
    for hook in _hooks.session_started:
        try:
            hook()
        except Exception as exc:
            _safety.internal_error("session start hook", exc, raise_in_strict=False)
    session = Session(level, output, fmt, RT.config, sink, pipeline)
    session.implicit = implicit
    _discard_stale_records(session)
    session._open()
    RT.session = session
    RT.pipeline = pipeline
    RT.level = level
    update_compact()
    session_began(session)
    return session


def session_began(session: Session) -> None:
    """A session records now (in this process or, see children.py, in a child): the hooks learn it."""
    for hook in _hooks.session_began:
        try:
            hook(session)
        except Exception as exc:
            _safety.internal_error("session began hook", exc, raise_in_strict=False)


def _settle(session: Session) -> None:
    """Trace lines, sampling or the OpenTelemetry bridge are about to start on ``session``: what is
    queued (records that ended before) is written first, as it was recorded. They apply to what ends
    from now on, and never see a CompactSpan tuple, which has no ids or parent to give them."""
    RT.compact = False
    session._request_round(session.config.timeout)


def update_compact() -> None:
    """Whether plain spans may be queued as CompactSpan tuples now (see ``runtime.py``): the session writes
    a file, and no trace lines, sampling or OpenTelemetry bridge need their ids or parents."""
    s = RT.session
    RT.compact = (
        s is not None
        and s.format in ("perfetto", "json")
        and s.lines is None
        and RT.pipeline is None
        and RT.bridge is None
    )


def _adopt(session: Session, level: int, pipeline: Pipeline | None) -> Session:
    """start() joining a recording a PerfettoHandler began: it becomes explicit, with start()'s level
    and, if given, sampling."""
    session.implicit = False
    session.level = level
    if pipeline is not None:
        _settle(session)
        session._account_sampling()  # what the earlier sampling did stays counted
        session.pipeline = pipeline
        session._sampling_at_start = pipeline.counts()
        pipeline.on_flood_end = session._flood_end
        RT.pipeline = pipeline
    RT.level = level
    update_compact()
    return session


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.abspath(os.fspath(a)) == os.path.abspath(os.fspath(b))


class OtherFileError(ValueError):
    """Another trace file than the one asked for is being recorded (see :func:`record_into`)."""


def record_into(
    path: str | os.PathLike[str], level: int = 2, who: str = "PerfettoHandler", *, sampling: Any = None
) -> Session:
    """The session recording into ``path``; one is started (implicit, by ``who``, with ``sampling`` or
    else ``configure(sampling=...)``'s) if none is active.

    Used by :class:`tracebridge.logging.PerfettoHandler`: a handler and a session (or two handlers) that
    name the same file share one recording. Raises :class:`OtherFileError` when another file is being
    recorded.
    """
    level = _validate_level(level)
    with _session_lock:
        current = RT.session
        if current is not None and current.implicit and current.format == "none":
            _stop(None, resume=False)
            current = None
        if current is None:
            pipeline = session_pipeline(RT.config.sampling if sampling is None else sampling)
            session = _begin(level, path, default_output_format(path), pipeline, implicit=True)
            session.started_by = who
            return session
        if current.path is not None and _same_file(current.path, path):
            return current
        raise OtherFileError(
            f"tracebridge is already recording into {current.path or 'memory'}: a trace for "
            f"{os.fspath(path)!r} cannot start; one trace file at a time (name the same file, or stop the "
            "other recording)"
        )


def _lines_changed(lines: TraceLines | None) -> None:
    """configure(log_lines=...) took effect: the active session logs with it; with no session, one that
    only feeds trace lines starts (and stops when trace lines are turned off)."""
    session = RT.session
    if session is not None:
        if lines is None and session.implicit and session.format == "none" and RT.bridge is None:
            _stop(None, resume=False)
        else:
            if lines is not None:
                _settle(session)
            session.lines = lines
            update_compact()
        return
    if lines is not None:
        _begin(lines.max_level, None, "none", session_pipeline(RT.config.sampling), implicit=True)


def _otel_changed(value: Any) -> None:
    """configure(otel=...) took effect. The bridge works where spans are decided (the pipeline path),
    so a session with no sampling gets an empty pipeline while it is on."""
    if not value:
        RT.bridge = None
        update_compact()
        session = RT.session
        if session is not None and session.implicit and session.format == "none" and session.lines is None:
            _stop(None, resume=False)
        return
    factory = _hooks.span_hook_factory
    if factory is None:
        raise ValueError("otel: no OpenTelemetry integration is installed (import tracebridge first)")
    hook = factory(value)
    if RT.session is not None:
        _settle(RT.session)
    RT.bridge = hook
    if RT.session is None:
        _begin(2, None, "none", session_pipeline(RT.config.sampling), implicit=True)
    elif RT.pipeline is None:
        RT.pipeline = Pipeline([])
    update_compact()


def session_pipeline(sampling: Any) -> Pipeline | None:
    """The session's pipeline, with ``TRACEBRIDGE_FILTER``'s directives in front when it is set."""
    pipeline = Pipeline.of(sampling)
    env = Directives.from_env()
    if env is None:
        return pipeline
    if pipeline is None:
        return Pipeline([env])
    if any(isinstance(st, Directives) for st in pipeline.stages):
        return pipeline
    return Pipeline(
        [env, *pipeline.stages], keep_critical=pipeline.keep_critical, keep_failures=pipeline.keep_failures
    )


def _discard_stale_records(session: Session) -> None:
    """Records left in thread queues by an earlier session (spans that ended after it stopped)."""
    for st in all_threads():
        session._discard(st.buf, len(st.buf), "outside_session")
        st.take_drops()  # (counted by the session they happened in, or outside any session)


def stop(timeout: float | None = None) -> Session:
    """Stop the active session, write everything it recorded, and return it (finished).

    With trace lines or the OpenTelemetry bridge configured, a session that records nothing but feeds
    them takes over, so that they go on.

    .. versionadded:: 0.1
    """
    return _stop(timeout, resume=True)


def _stop(timeout: float | None, resume: bool) -> Session:
    exits.stopping += 1
    try:
        return _stop_now(timeout, resume)
    finally:
        exits.stopping -= 1
        exits.stop_ended()


def _stop_now(timeout: float | None, resume: bool) -> Session:
    if RT.session is not None:
        for hook in _hooks.before_stop:  # outside the lock: hooks log, and handlers take their own locks
            try:
                hook()
            except Exception as exc:
                _safety.internal_error("stop hook", exc, raise_in_strict=False)
    with _session_lock:
        session = RT.session
        if session is None:
            raise RuntimeError("no tracebridge session is active; call tracebridge.start() first")
        session._mark_stopping()  # (before it stops being RT.session: a thread that waits for room goes on)
        RT.level = 0
        RT.session = None
        RT.pipeline = None
        RT.compact = False
        session._finish(session.config.timeout if timeout is None else timeout)
        session.stopped = True
        for ended in _hooks.session_ended:
            try:
                ended(session)
            except Exception as exc:
                _safety.internal_error("session ended hook", exc, raise_in_strict=False)
        _last_session[0] = session
        if session.format == "memory":
            session.events.sort(key=_start_key)
        if resume and not session.implicit and (RT.bridge is not None or RT.config.trace_lines() is not None):
            lines = RT.config.trace_lines()
            level = max(2, lines.max_level if lines is not None else 2)
            _begin(level, None, "none", session_pipeline(RT.config.sampling), implicit=True)
    _safety.raise_pending()
    return session


def stats() -> Stats:
    """What the active session has recorded and dropped so far (by reason, including sampling, whose
    stages' counts are in ``Stats.sampling``), or the last session's final counts.

    .. versionadded:: 0.1
    """
    session = RT.session or _last_session[0]
    if session is None:
        return Stats()
    if session.stopped:
        return session.stats
    with session._stats_lock:
        live = Stats.from_dict(session.stats.as_dict())
    live.sampling = session.sampling_counts()
    for entry in live.sampling.values():
        for kind, n in entry.get("dropped", {}).items():
            live.count_drop(entry["reason"], kind, n)
    return live


_last_session: list[Session | None] = [None]


def _start_key(ev: Event) -> int:
    return ev.start_ns


def current_session() -> Session | None:
    return RT.session


def flush(timeout: float | None = None) -> bool:
    """Write everything recorded so far by the active session. True when done within ``timeout``.

    .. versionadded:: 0.1
    """
    session = RT.session
    if session is None:
        return True
    return session.flush(timeout)


def shutdown(timeout: float | None = None) -> Session | None:
    """Stop the active session if there is one (what the exit hook does). Never raises.

    .. versionadded:: 0.1
    """
    try:
        if RT.session is None:
            return None
        return _stop(timeout, resume=False)
    except Exception as exc:
        _safety.internal_error("shutdown", exc, raise_in_strict=False)
        return None


def _at_exit() -> None:
    if RT.session is not None:
        shutdown(RT.config.timeout)


atexit.register(_at_exit)
