"""Back-traces: the frames of an exception or of the calling thread, outermost first."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType
from typing import Any, TypeVar

from . import _safety
from ._model import MAX_CAUSES, ErrorInfo, Frame
from ._recorder.runtime import RT
from ._sanitize import clean_str

F = TypeVar("F", bound=Callable[..., Any])


#: The code of tracebridge's function wrappers: their frames are left out of back-traces (the compiled
#: wrapper has no frame, so both paths show the same frames: the caller's, then the function's).
WRAPPER_CODES: set[CodeType] = set()


def wrapper_frame(fn: F) -> F:
    """Mark ``fn`` (a wrapper tracebridge makes) as a frame back-traces leave out."""
    WRAPPER_CODES.add(fn.__code__)
    return fn


def frames_from_traceback(tb: Any, limit: int = 64) -> tuple[Frame, ...]:
    """The frames leading to an exception, outermost first: the stack above the frame that caught it,
    then the traceback's frames down to where it was raised. At most ``limit`` frames (innermost kept),
    tracebridge's wrappers left out."""
    frames: list[Frame] = []
    if tb is None:
        return ()
    hidden = WRAPPER_CODES
    outer: list[Any] = []
    f = tb.tb_frame.f_back
    while f is not None and len(outer) < limit:
        if f.f_code not in hidden:
            outer.append(f)
        f = f.f_back
    for fr in reversed(outer):
        frames.append(Frame(fr.f_code.co_name, fr.f_code.co_filename, fr.f_lineno or 0))
    while tb is not None:
        code = tb.tb_frame.f_code
        if code not in hidden:
            frames.append(Frame(code.co_name, code.co_filename, tb.tb_lineno or 0))
        tb = tb.tb_next
    return tuple(frames[-limit:])


def error_info(exc: BaseException | None, tb: Any = None, _depth: int = 0) -> ErrorInfo:
    """What an exception says of a failure, with the exceptions that caused it."""
    if exc is None:
        return ErrorInfo("Exception", "")
    if tb is None:
        tb = exc.__traceback__
    message = _safety.safe_str(exc)
    cause, explicit = exc.__cause__, True
    if cause is None and not exc.__suppress_context__ and exc.__context__ is not None:
        cause, explicit = exc.__context__, False
    return ErrorInfo(
        type(exc).__qualname__,
        clean_str(message, RT.config.max_string),
        frames_from_traceback(tb),
        error_info(cause, None, _depth + 1) if cause is not None and _depth < MAX_CAUSES else None,
        explicit,
    )


def stack_frames(skip: int = 0, limit: int = 128) -> tuple[Frame, ...]:
    """The calling thread's stack, outermost first, without the ``skip`` innermost frames."""
    f: Any = sys._getframe(1 + skip)
    frames: list[Frame] = []
    while f is not None and len(frames) < limit:
        if f.f_code not in WRAPPER_CODES:
            frames.append(Frame(f.f_code.co_name, f.f_code.co_filename, f.f_lineno or 0))
        f = f.f_back
    frames.reverse()
    return tuple(frames)


def is_failure(exc_type: type[BaseException], exc: BaseException | None) -> bool:
    """Closing a generator early and ``sys.exit(0)`` end a span normally; anything else is a failure."""
    if exc_type is GeneratorExit:
        return False
    return not (isinstance(exc, SystemExit) and exc.code in (None, 0))
