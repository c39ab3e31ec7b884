"""Child processes record into the parent's trace.

A recording that writes a file follows the program into its children, whatever starts them:

* ``fork`` (``os.fork``, multiprocessing's fork start method, its pools and executors): the parent
  writes what is queued first; the child drops (and counts) what it inherited and starts a session of its
  own with a fresh writer;
* ``spawn`` and ``forkserver``: the parent puts a :class:`ChildPlan` into multiprocessing's process
  configuration (``current_process()._config``), which every ``Process`` copies and a spawned child
  unpickles before it runs anything: unpickling it starts the child's session, with the parent's level,
  format and plain options.

A child writes ``<trace>.children/<pid>.recording.<ext>`` and renames it ``<pid>.<ext>`` when its
session ends: at its ``stop()``, at exit, in multiprocessing's exit path (a finalizer: its children end
with ``os._exit``, which runs no ``atexit``) and on SIGTERM (see ``exits.py``). When
the parent's session ends, every finished child's trace (and the trace of a child that died without
finishing it: it is valid up to its last complete packet) is appended to the parent's file as a process of
its own, and the child's file is removed. A child's packet sequences are numbered from a range of its
own (``SEQUENCE_RANGE``), so that its file is appended as it is, without decoding every packet. Children
still running (or still starting) are taken at multiprocessing's exit, after it has joined its children;
one still running then keeps its file in the ``.children`` folder, which the parent names on stderr and
``tracebridge summary`` names too.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import shutil
import sys
import threading
from multiprocessing import process as mp_process
from multiprocessing import util as mp_util
from pathlib import Path
from types import FrameType
from typing import Any

from .. import _hooks, _safety
from .._config import Config
from . import exits, lifecycle
from .runtime import RT, threads_after_fork
from .session import Session

#: Where the children of the trace file ``x.perfetto-trace`` write: ``x.perfetto-trace.children/``.
CHILDREN_SUFFIX = ".children"
_PLAN_KEY = "tracebridge"
_RECORDING = ".recording"


def children_dir(trace: Path) -> Path:
    return trace.with_name(trace.name + CHILDREN_SUFFIX)


def _extension(trace: Path) -> str:
    return ".json" if trace.name.lower().endswith(".json") else ".perfetto-trace"


def child_path(root: Path, pid: int) -> Path:
    """The file a child process ``pid`` of the recording into ``root`` writes while it records."""
    return children_dir(root) / f"{pid}{_RECORDING}{_extension(root)}"


def finished_path(path: Path) -> Path:
    """Where a child's file goes once its session ended (``<pid>.recording.ext`` -> ``<pid>.ext``)."""
    return path.with_name(path.name.replace(_RECORDING, "", 1))


# -- the plan a child follows ----------------------------------------------------------------------

#: Options of :class:`Config` that cross into spawned children as they are (plain values).
_PLAIN = (bool, int, float, str, type(None))


class ChildPlan:
    """What a spawned child needs to record as its parent does: unpickling it starts the recording."""

    def __init__(
        self, level: int, fmt: str, root: str, options: dict[str, Any], state: dict[str, Any] | None = None
    ) -> None:
        self.level = level
        self.fmt = fmt
        self.root = root
        self.options = options
        self.state = state

    def __reduce__(self) -> tuple[Any, ...]:
        session = RT.session
        if session is not None and session.root is None and session.path is not None:
            session.children_started += 1  # (a Process pickled to start: see take_children)
        state = self.state
        if state is None:  # (captured as the child is started: instrument() may have run since)
            state = {}
            for name, (capture, _) in _hooks.child_state.items():
                try:
                    value = capture()
                    if value:
                        state[name] = value
                except Exception as exc:
                    _safety.internal_error("child process", exc, raise_in_strict=False)
        return (_resume, (self.level, self.fmt, self.root, self.options, state))


def _plan_for(session: Session) -> ChildPlan | None:
    if session.path is None or session.format not in ("perfetto", "json") or not session.config.children:
        return None
    options: dict[str, Any] = {}
    for name in Config.__dataclass_fields__:
        value = getattr(session.config, name)
        if isinstance(value, _PLAIN) or (name == "log_lines" and isinstance(value, dict)):
            options[name] = value
    if session.config.sampling is not None:
        try:  # sampling crosses when it pickles (stages hold only settings); else the child has none
            pickle.loads(pickle.dumps(session.config.sampling))
            options["sampling"] = session.config.sampling
        except Exception:
            pass
    root = session.root if session.root is not None else session.path
    return ChildPlan(session.level, session.format, str(root), options)


def _resume(
    level: int, fmt: str, root: str, options: dict[str, Any], state: dict[str, Any] | None = None
) -> ChildPlan:
    """In a spawned (or forkserver) child, as multiprocessing unpickles its process: take over what the
    parent set up (auto-instrumentation) and start recording."""
    plan = ChildPlan(level, fmt, root, options, state)
    if RT.session is None and not _in_root(Path(root)):
        for name, value in (state or {}).items():
            try:
                if name not in _hooks.child_state:  # (keyed by the module that registers it)
                    importlib.import_module(name)
                _hooks.child_state[name][1](value)
            except Exception as exc:
                _safety.internal_error("child process", exc, raise_in_strict=False)
        try:
            cfg = Config(**{k: v for k, v in options.items() if k in Config.__dataclass_fields__})
            cfg.validate()
            RT.config = cfg
            lifecycle.configure()  # (applies the options that live outside the Config object)
            _start_child(level, fmt, Path(root), cfg, lifecycle.session_pipeline(cfg.sampling))
        except Exception as exc:
            _safety.internal_error("child process", exc, raise_in_strict=False)
    return plan


def inheriting() -> bool:
    """Whether this process is a spawned child still being set up by multiprocessing (importing its
    parent's main module, unpickling its process object)."""
    return bool(getattr(mp_process.current_process(), "_inheriting", False))


def _in_root(root: Path) -> bool:
    """Whether this process is the one recording into ``root`` itself (it unpickled its own plan)."""
    s = RT.session
    return s is not None and s.path is not None and s.path == root


def _start_child(level: int, fmt: str, root: Path, config: Config, pipeline: Any = None) -> Session | None:
    path = child_path(root, os.getpid())
    session = Session(level, path, fmt, config, None, pipeline)  # type: ignore[arg-type]
    session.root = root
    for attempt in range(3):
        path.parent.mkdir(exist_ok=True)
        try:
            if fmt == "perfetto":
                session.first_sequence = _claim_sequences(path.parent)
            session._open()
            break
        except FileNotFoundError:  # the parent removed the empty folder just now: make it again
            if attempt == 2:
                raise
    RT.session = session
    RT.pipeline = pipeline
    lifecycle.update_compact()
    RT.level = level
    lifecycle.session_began(session)
    return session


#: Each child's Perfetto file numbers its packet sequences from a range of its own, ``n << 20`` for the
#: ``n``-th child of the recording (the parent's stay below ``1 << 20``): the parent appends it as it is,
#: without decoding and renumbering every packet (see merge.append_processes).
SEQUENCE_RANGE = 1 << 20
_CLAIMS = ".sequences"


def _claim_sequences(folder: Path) -> int:
    """The first sequence id of a range no other process of the recording has: claimed by creating
    ``<folder>/.sequences/<n>`` (O_EXCL: two processes cannot both create it)."""
    claims = folder / _CLAIMS
    claims.mkdir(exist_ok=True)
    for n in range(1, 4096):
        try:
            os.close(os.open(claims / str(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue
        return n * SEQUENCE_RANGE
    return 1  # (more than 4,095 processes: numbered from 1, renumbered as they are appended)


def publish(session: Session) -> None:
    """A session that writes a file began: children started from now on record too."""
    plan = _plan_for(session)
    config = _process_config()
    if plan is None:
        config.pop(_PLAN_KEY, None)
    else:
        config[_PLAN_KEY] = plan
        if session.root is None:  # the root: children of an earlier run of this file are not ours
            _clear(children_dir(session.path))  # type: ignore[arg-type]


def withdraw() -> None:
    _process_config().pop(_PLAN_KEY, None)


def _process_config() -> dict[str, Any]:
    """multiprocessing's configuration of this process, which every Process it starts copies (and a
    spawned one unpickles)."""
    return mp_process.current_process()._config  # type: ignore[attr-defined,no-any-return]


def _clear(folder: Path) -> None:
    """Remove the files of a children folder (and its sequence claims); the folder itself if it can."""
    if not folder.is_dir():
        return
    shutil.rmtree(folder / _CLAIMS, ignore_errors=True)
    for f in folder.iterdir():
        if f.is_file():
            with contextlib.suppress(OSError):
                f.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


# -- fork ------------------------------------------------------------------------------------------


def _before_fork() -> None:
    session = RT.session
    if session is not None and not session.stopped:
        session._request_round(min(1.0, session.config.timeout))
        if session.root is None and session.path is not None:
            session.children_started += 1
    exits.hold_for_fork()


def _after_fork_in_child() -> None:
    try:
        _child_records()
    finally:
        exits.release_after_fork()


def _child_records() -> None:
    exits.default_in_child()  # (before SIGTERM is let through: see exits.py)
    # Locks held by threads that do not exist in the child must not be inherited held.
    lifecycle.renew_lock_after_fork()
    inherited = threads_after_fork()
    parent = RT.session
    if parent is None or parent.stopped:
        return
    RT.level = 0
    RT.session = None
    RT.pipeline = None
    RT.compact = False
    pipeline = parent.pipeline
    if pipeline is not None:
        pipeline.after_fork()
    if not parent.config.children or _about_to_exec():
        return
    # (A sink the program made for the parent is not called again in the child: it may write where the
    # parent's does. The child writes its own file, or keeps its events in memory.)
    try:
        if parent.path is not None and parent.format in ("perfetto", "json"):
            root = parent.root if parent.root is not None else parent.path
            child = _start_child(parent.level, parent.format, root, parent.config, pipeline)
        else:  # in memory (or nothing but trace lines): the child records on its own, as its parent does
            child = Session(parent.level, None, parent.format, parent.config, None, pipeline)
            child.implicit = parent.implicit
            child._open()
            RT.session = child
            RT.pipeline = pipeline
            lifecycle.update_compact()
            RT.level = child.level
            lifecycle.session_began(child)
        if child is not None and inherited:
            child.count_drop("fork_inherited", "span", inherited)
    except Exception as exc:
        _safety.internal_error("fork", exc, raise_in_strict=False)


def _about_to_exec() -> bool:
    """Whether this fork is subprocess's, to run another program: with a ``preexec_fn`` it runs the
    at-fork hooks in the child before ``exec``, which ends this interpreter at once (a session begun
    there would leave an empty process in the trace)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(6):  # (the hooks run inside the call that forks: a few frames up)
        if frame is None:
            return False
        if frame.f_code.co_name == "_execute_child" and frame.f_globals.get("__name__") == "subprocess":
            return True
        frame = frame.f_back
    return False


class _AfterFork:
    """multiprocessing runs its after-fork hooks in every child it starts, after clearing the parent's
    finalizers: there the child's session gets its own finalizer, which ends it on multiprocessing's
    exit path (``os._exit`` follows, which runs no ``atexit``)."""

    def __call__(self) -> None:
        if RT.session is not None and RT.session.root is not None:
            mp_util.Finalize(None, lifecycle.shutdown, exitpriority=100)


_after_fork = _AfterFork()
mp_util.register_after_fork(_after_fork, lambda hook: hook())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=exits.release_after_fork, after_in_child=_after_fork_in_child
    )


# -- the parent takes its children's traces ---------------------------------------------------------


def _pid_of(f: Path) -> int | None:
    head = f.name.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet waited for, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


_merge_lock = threading.Lock()


def take_children(session: Session, final: bool = False) -> None:
    """Append the traces of the session's children that ended to its file (see the module's doc).
    Children still running are taken as multiprocessing exits, after it has joined its own; those still
    running then are named on stderr, their files left in the ``.children`` folder. Never raises."""
    if session.root is not None or session.path is None:
        return
    folder = children_dir(session.path)
    done: list[Path] = []
    running: list[Path] = []
    try:
        with _merge_lock:
            for f in sorted(folder.iterdir()) if folder.is_dir() else ():
                pid = _pid_of(f)
                if pid is None or not f.is_file():
                    continue
                (running if _RECORDING in f.name and _alive(pid) else done).append(f)
            if done:
                _append(session, done)
                for f in done:
                    f.unlink()
                session.children_added += len(done)
            # Children started that have no file yet (forked or spawned just now): taken later.
            starting = session.children_started - session.children_added - len(running) > 0
            if not running and (final or not starting):
                _clear(folder)
    except Exception as exc:
        _safety.internal_error("merging child processes", exc, raise_in_strict=False)
        return
    if not running and (final or not starting):
        return
    if not final and not getattr(mp_util, "_exiting", False):
        if not session._children_pending:  # (multiprocessing's exit runs this after joining children)
            session._children_pending = True
            mp_util.Finalize(None, take_children, args=(session, True), exitpriority=-100)
        return
    if running:
        _safety.report(
            f"tracebridge: {len(running)} child process(es) of {session.path} still recording as it ended: "
            f"their traces stay in {folder} (tracebridge merge adds them)"
        )


def _append(session: Session, files: list[Path]) -> None:
    assert session.path is not None
    if session.format == "json":
        from ..sinks.chrome import append_chrome_traces

        append_chrome_traces(session.path, files)
    else:
        from ..sinks.perfetto.merge import append_processes

        session.next_sequence, session.merged_snapshots = append_processes(
            session.path, files, session.next_sequence, session.merged_snapshots, SEQUENCE_RANGE
        )


# -- what every session that writes a file does as it begins and ends -------------------------------


def _began(session: Session) -> None:
    if session.format not in ("perfetto", "json"):
        return
    publish(session)
    exits.install(lifecycle.shutdown, watch=session.root is not None)  # (a child's: see exits.py)


def _ended(session: Session) -> None:
    """After a session's file is closed: a child's file says it is finished; the root's takes in the
    traces of its children that ended."""
    if session.format not in ("perfetto", "json") or session.path is None:
        return
    withdraw()
    try:
        if session.timed_out:
            return  # (the writer closes the file later)
        if session.root is not None:
            try:
                os.replace(session.path, finished_path(session.path))
            except OSError as exc:
                _safety.internal_error("child process", exc, raise_in_strict=False)
        else:
            take_children(session)  # (SIGTERM still finishes this first: see exits.stopping)
    finally:
        exits.uninstall()


_hooks.session_began.append(_began)
_hooks.session_ended.append(_ended)
