"""``tracebridge run``: a script or module run as ``python`` would run it, instrumented and recorded."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import runpy
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import _recorder
from ._environment import ENV_LEVEL, ENV_OUTPUT, ENV_RUNTIME, EnvironmentSettingError, from_environment
from ._recorder.runtime import RT
from ._units import parse_duration
from .instrument import instrument

if TYPE_CHECKING:
    from .otel.libraries import LibrarySpans

ENV_PATTERNS = "TRACEBRIDGE_INSTRUMENT"


def local_modules(directory: Path) -> list[str]:
    """The top-level modules and packages in ``directory``: a project's own code, by default."""
    names = []
    try:
        entries = sorted(directory.iterdir())
    except OSError:
        return []
    for entry in entries:
        if entry.suffix == ".py" and entry.stem.isidentifier():
            names.append(entry.stem)
        elif entry.is_dir() and entry.name.isidentifier() and (entry / "__init__.py").exists():
            names.append(entry.name)
    return names


#: ``tracebridge run``'s options that take a value (the rest are flags).
_VALUED = frozenset({"-i", "--instrument", "-o", "--output", "--level", "--min-duration", "--on-full"})


def split_module(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """``run``'s own arguments, the module after ``-m`` (or ``None``), and everything after the module,
    which is the module's, as ``python -m module args...`` has it (options included)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            if i + 1 < len(argv):
                return argv[:i], argv[i + 1], argv[i + 2 :]
            return argv, None, []  # (argparse says -m needs a value)
        if arg.startswith("-m") and not arg.startswith("--"):
            return argv[:i], arg[2:], argv[i + 1 :]
        if not arg.startswith("-") or arg == "--":
            break  # the script: what follows is its own
        i += 2 if arg in _VALUED else 1
    return argv, None, []


class _FallbackHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Trace lines on stderr unless the program's logging shows them: once a handler of the root logger
    takes records of their level, the lines go there (they propagate) and this one stays quiet."""

    def emit(self, record: logging.LogRecord) -> None:
        if not any(record.levelno >= h.level for h in logging.getLogger().handlers):
            super().emit(record)


DEFAULT_OUTPUT = "tracebridge-run.perfetto-trace"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-i",
        "--instrument",
        action="append",
        default=[],
        metavar="PATTERN",
        help=f"modules to instrument (names or globs; repeatable; also ${ENV_PATTERNS}, comma-separated);"
        " default: the modules and packages next to the script (or in the current directory for -m)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help=f"trace file to write (default ${ENV_OUTPUT}, else {DEFAULT_OUTPUT})",
    )
    p.add_argument(
        "--level", type=int, default=None, help=f"trace level to record (default ${ENV_LEVEL}, else 2)"
    )
    p.add_argument(
        "--min-duration", metavar="DURATION", help="leave out calls shorter than this (e.g. 100us)"
    )
    p.add_argument("--log-lines", action="store_true", help="log a trace line for every call (on stderr)")
    p.add_argument(
        "--runtime",
        action="store_true",
        help="also record the process's memory, CPU, threads, open files and garbage collector as counters,"
        f" and the collector's pauses as slices on a GC track (also ${ENV_RUNTIME}=1)",
    )
    p.add_argument(
        "--on-full",
        choices=("block", "drop"),
        default="block",
        help="when the program outruns the trace writer: wait for it, losing nothing (block, the default),"
        " or drop events and mark the gaps (drop: the program runs at full speed)",
    )
    p.add_argument(
        "--open", action="store_true", help="open the trace in the Perfetto UI when the program ends"
    )
    p.add_argument(
        "--no-library-spans",
        action="store_true",
        help="leave the installed opentelemetry-instrumentation-* packages off (by default their libraries'"
        " spans, HTTP clients and servers, databases, ..., are recorded too)",
    )
    p.add_argument("-m", dest="module", metavar="MODULE", help="run a module as python -m does")
    p.add_argument("target", nargs=argparse.REMAINDER, help="script.py and its arguments")


def run(args: argparse.Namespace) -> int:
    """Run the target; its exit code is ours. Its exceptions propagate as they would under python.
    ``--open``: then open its trace in the Perfetto UI (however the program ended)."""
    try:
        return _run(args)
    finally:
        if getattr(args, "open", False) and args.output and os.path.isfile(args.output):
            from ._open import open_trace

            open_trace(args.output)


def _library_spans(session: _recorder.Session) -> LibrarySpans | None:
    """The installed OpenTelemetry instrumentation packages, activated for ``session`` (said in one line);
    ``None`` when there are none, or OpenTelemetry is not installed, or they could not be looked for
    (one line: the program runs without them)."""
    try:
        from .otel.libraries import activate_libraries
    except ImportError:
        return None
    try:
        libraries = activate_libraries(session)
    except Exception as exc:
        print(f"tracebridge: library spans left off: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    if libraries is not None:
        print(f"tracebridge: library spans from {', '.join(libraries.activated)}", file=sys.stderr)
    return libraries


def _run(args: argparse.Namespace) -> int:
    if args.module is None and not args.target:
        print("error: name a script, or -m MODULE", file=sys.stderr)
        return 2
    script = None if args.module is not None else args.target[0]
    argv = [args.module if script is None else script, *(args.target if script is None else args.target[1:])]
    if script is not None and not os.path.isfile(script):
        print(f"error: {script}: no such file", file=sys.stderr)
        return 2
    try:  # (TRACEBRIDGE_SAMPLING and TRACEBRIDGE_FILTER: start() reads them)
        env = from_environment()
    except EnvironmentSettingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.output = args.output or env.output or DEFAULT_OUTPUT
    args.level = env.level or 2 if args.level is None else args.level
    args.log_lines = args.log_lines or env.log_lines
    args.runtime = args.runtime or env.runtime
    patterns = [p for p in args.instrument]
    patterns += [p.strip() for p in os.environ.get(ENV_PATTERNS, "").split(",") if p.strip()]
    if not patterns:
        base = Path(script).resolve().parent if script is not None else Path.cwd()
        patterns = local_modules(base)
    if args.min_duration:
        try:  # a clear error before anything runs
            parse_duration(args.min_duration, "--min-duration")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if args.level < 1:
        print(f"error: --level must be 1 or more, got {args.level}", file=sys.stderr)
        return 2
    search = str(Path(script).resolve().parent) if script is not None else os.getcwd()
    sys.path.insert(0, search)  # as python does for a script (or the current directory for -m)
    if args.module is not None:
        # Only the top-level package: finding a submodule would import its package (and what that
        # imports) before it is instrumented. runpy reports the rest as python does.
        top = args.module.partition(".")[0]
        try:
            found = bool(top) and importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            print(f"error: No module named {top or args.module}", file=sys.stderr)
            return 1
    try:
        handle = instrument(patterns, level=args.level, min_duration=args.min_duration) if patterns else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.log_lines:
        _recorder.configure(log_lines=True)
        trace_logger = logging.getLogger("tracebridge.trace")
        if not trace_logger.handlers:
            trace_logger.addHandler(_FallbackHandler(sys.stderr))
            trace_logger.setLevel(logging.INFO)
    on_full, runtime = RT.config.on_full, RT.config.runtime
    _recorder.configure(on_full=args.on_full, runtime=runtime or args.runtime)
    session = _recorder.start(level=args.level, output=args.output)
    libraries = None if args.no_library_spans else _library_spans(session)
    old_argv = sys.argv
    sys.argv = argv
    try:
        if script is not None:
            runpy.run_path(script, run_name="__main__")
        else:
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        return 0
    except Exception as exc:
        # As python reports it: the traceback from the program's first frame (not runpy's or ours).
        tb = exc.__traceback__
        ours = (__file__, runpy.run_path.__code__.co_filename)
        while tb is not None and tb.tb_frame.f_code.co_filename in ours:
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)  # (the program's own hook, if it set one)
        return 1
    finally:
        sys.argv = old_argv
        if libraries is not None:
            libraries.stop()
        session = _recorder.stop()
        _recorder.configure(on_full=on_full, runtime=runtime)
        if handle is not None:
            handle.uninstrument()
        dropped = session.stats.total_dropped
        why = ", ".join(sorted(session.stats.dropped))
        print(
            f"tracebridge: {session.stats.total_recorded} events in {session.path}"
            f" (modules instrumented: {len(handle.modules) if handle else 0})"
            + (f"; {dropped} dropped ({why})" if dropped else "")
            + (f"; {session.children_added} child processes' traces added" if session.children_added else ""),
            file=sys.stderr,
        )
