"""One guard for every call into user code and sinks.

At run time tracebridge never lets an exception reach the application. An internal error is counted and
reported once per cause (where, exception type and errno) in one line on stderr, written directly: not
through logging, whose only handler may be the very sink that fails. A session that lost events to such
faults says so on stderr when it ends, with the counts (see ``Session._report_faults``). In strict mode
(``TRACEBRIDGE_STRICT=1`` or ``configure(strict=True)``, as the test suite runs) errors are raised
instead, so that bugs cannot hide behind the guard.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_strict = os.environ.get("TRACEBRIDGE_STRICT", "") not in ("", "0", "false", "False")
_lock = threading.Lock()
_counts: dict[str, int] = {}
#: Per cause (see :func:`cause`): how many times, and the first one as ``where: Type: message``.
_causes: dict[str, tuple[int, str]] = {}
#: Errors caught on threads that cannot raise into the application (the writer): kept for strict mode,
#: which raises the first of them at the next ``flush()`` or ``stop()``.
_pending: list[BaseException] = []

#: Set while tracebridge itself is running code that may log: records made then are not fed back into
#: tracebridge's own pipeline.
inside: contextvars.ContextVar[bool] = contextvars.ContextVar("tracebridge_inside", default=False)


def strict() -> bool:
    return _strict


def set_strict(value: bool) -> None:
    global _strict
    _strict = bool(value)


def cause(where: str, exc: BaseException) -> str:
    """What makes two errors the same for reporting: the place, the exception's type and its errno."""
    errno = getattr(exc, "errno", None)
    return f"{where}: {type(exc).__name__}" + (f" [Errno {errno}]" if isinstance(errno, int) else "")


def report(line: str) -> None:
    """Write one line on stderr (never raises: at interpreter shutdown stderr may be gone)."""
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(line + "\n")
            stream.flush()
    except Exception:
        pass


def internal_error(where: str, exc: BaseException, *, raise_in_strict: bool = True) -> None:
    """Count ``exc`` under ``where``; report the first of its cause on stderr; raise it in strict mode."""
    key = cause(where, exc)
    with _lock:
        _counts[where] = _counts.get(where, 0) + 1
        n, first_text = _causes.get(key, (0, ""))
        _causes[key] = (n + 1, first_text or f"{where}: {type(exc).__name__}: {_safe_text(exc)}")
    if not n:
        report(
            f"tracebridge: {where} failed: {type(exc).__name__}: {_safe_text(exc)} (reported once; "
            "tracebridge goes on, and says what it lost when the recording ends)"
        )
    if _strict and raise_in_strict:
        raise exc


def _safe_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return "<unprintable>"


def cause_counts() -> dict[str, tuple[int, str]]:
    """Every cause of internal errors so far: (how many times, the first one as ``where: Type: message``)."""
    with _lock:
        return dict(_causes)


def defer_error(where: str, exc: BaseException) -> None:
    """Like :func:`internal_error` for code on tracebridge's own threads: in strict mode the error is
    kept and raised later on the application's thread by :func:`raise_pending`."""
    internal_error(where, exc, raise_in_strict=False)
    if _strict:
        with _lock:
            _pending.append(exc)


def raise_pending() -> None:
    """In strict mode, raise the first error kept by :func:`defer_error`."""
    if not _strict:
        return
    with _lock:
        if not _pending:
            return
        exc = _pending[0]
        _pending.clear()
    raise exc


def error_counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


@contextmanager
def guarded(where: str) -> Iterator[None]:
    """Run a block whose exceptions are internal errors (see :func:`internal_error`)."""
    try:
        yield
    except Exception as exc:
        internal_error(where, exc)


def safe_str(value: object) -> str:
    """``str(value)`` that never raises."""
    try:
        return str(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


@contextlib.contextmanager
def errors_named(public: str, internal: str) -> Iterator[None]:
    """Setup errors of a stage that a public class builds for the user, named after that class (the user
    wrote ``RateLimitFilter(per_second=0)``, not ``KeyedRateLimiter(...)``)."""
    try:
        yield
    except ValueError as exc:
        text = str(exc)
        raise ValueError(
            public + text[len(internal) :] if text.startswith(internal) else f"{public}: {text}"
        ) from None
