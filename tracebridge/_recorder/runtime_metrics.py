"""Runtime metrics (``configure(runtime=True)``): the process's memory, CPU, threads, open files and
garbage collector as counter tracks, and the collector's pauses as slices on the "GC" track.

* The counters are sampled by the writer thread as one of its rounds begins (a round source: see
  ``Session.round_sources``), at most once per half ``flush_interval`` and once more as the session
  stops: nothing runs on the application's threads for them. On Linux they come from ``/proc/self``;
  elsewhere a metric the standard library cannot give (the current RSS, open descriptors) is left out.
* A collection is timed by a ``gc.callbacks`` callback, which runs on the thread that collects, as the
  collection begins and ends: it reads the clock and appends a tuple to a bounded queue, nothing more.
  The writer adds every pause to GC % and makes slices of those of at least ``gc_min_pause``, on the
  "GC" track of the process, not of the thread: a collection holds the interpreter lock, so every
  Python thread of the process waits for it (but while the finalizers and callbacks it calls run), not
  only the one whose allocation happened to trigger it. That one is named in the ``thread`` argument,
  and the slice is written on its packet sequence.

The callback is registered while a session with ``runtime=True`` records, once (one object per
process), and removed as it stops (before its last round, which writes the last pauses) and in a child
process as it forks (the child's own session registers it again).
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from threading import get_ident
from typing import TYPE_CHECKING, Any

from .. import _hooks, _safety
from .._model import GC_CATEGORY, GC_TRACK, Record, SpanRecord, ThreadInfo
from .runtime import RT, thread_local

if TYPE_CHECKING:
    from .session import Session

#: Counter tracks: (name, unit). Units Perfetto knows (``bytes``, ``count``) show as its own.
RSS = ("mem.rss", "bytes")
CPU = ("cpu.percent", "%")
GC_TIME = ("gc.percent", "%")
THREADS = ("threads", "count")
OPEN_FILES = ("fds", "count")
GC_OBJECTS = ("gc.gen0.objects", "count")


def gc_collections(generation: int) -> tuple[str, str]:
    """The counter of the collections of ``generation`` since the process started."""
    return (f"gc.gen{generation}.collections", "count")


#: CPU % (and GC %) is left out of a sample taken less than this long after the last one that had it.
MIN_CPU_WINDOW_NS = 10_000_000
#: Pauses the callback keeps for the writer between two rounds; more are counted as dropped
#: (``queue_full``). A collection takes microseconds at least, so this is far more than a round sees.
MAX_PENDING_PAUSES = 8192

Sample = tuple[str, "int | float", str]
#: A pause as the callback keeps it: start and end (``perf_counter_ns``), generation, collected,
#: uncollectable, and the thread that collected: as the recorder knows it, or its ``get_ident()``.
Pause = tuple[int, int, int, int, int, "ThreadInfo | int"]


class ProcessSampler:
    """Reads the process's metrics as ``(name, value, unit)`` samples. A metric that cannot be read is
    left out from then on (never an exception). ``proc`` is the process's ``/proc`` directory (``None``:
    the standard library's metrics only); the clocks give nanoseconds (CPU % is the process's CPU time
    over the wall time since the last sample, 100 per busy core)."""

    def __init__(
        self,
        proc: str | None = "/proc/self",
        wall_clock: Callable[[], int] = time.perf_counter_ns,
        cpu_clock: Callable[[], int] = time.process_time_ns,
    ) -> None:
        self._stat = None if proc is None or not os.path.isdir(proc) else os.path.join(proc, "stat")
        self._fds = None if self._stat is None else os.path.join(proc or "", "fd")
        try:
            self._page = os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            self._stat = None
        self._wall_clock = wall_clock
        self._cpu_clock: Callable[[], int] | None = cpu_clock
        self._last = (wall_clock(), cpu_clock())
        self._gc = True

    def sample(self) -> list[Sample]:
        out: list[Sample] = []
        self._process(out)
        self._cpu(out)
        self._open_files(out)
        self._collector(out)
        return out

    def _process(self, out: list[Sample]) -> None:
        """RSS and threads: one read of ``/proc/self/stat`` (fields 20 and 24, after the name)."""
        if self._stat is not None:
            try:
                fd = os.open(self._stat, os.O_RDONLY)
                try:
                    data = os.read(fd, 4096)
                finally:
                    os.close(fd)
                fields = data.rpartition(b")")[2].split()
                threads, pages = int(fields[17]), int(fields[21])
            except (OSError, ValueError, IndexError):
                self._stat = None  # (threads are then counted as below)
            else:
                out.append((RSS[0], pages * self._page, RSS[1]))
                out.append((THREADS[0], threads, THREADS[1]))
                return
        # Elsewhere: Python's threads only. The RSS is left out (resource.getrusage's ru_maxrss is the
        # peak, not the current size).
        out.append((THREADS[0], threading.active_count(), THREADS[1]))

    def _cpu(self, out: list[Sample]) -> None:
        clock = self._cpu_clock
        if clock is None:
            return
        try:
            wall, cpu = self._wall_clock(), clock()
        except OSError:
            self._cpu_clock = None
            return
        last_wall, last_cpu = self._last
        if wall - last_wall < MIN_CPU_WINDOW_NS:  # (too short to say much: the next sample covers it)
            return
        self._last = (wall, cpu)
        out.append((CPU[0], round(100.0 * (cpu - last_cpu) / (wall - last_wall), 2), CPU[1]))

    def _open_files(self, out: list[Sample]) -> None:
        if self._fds is None:
            return
        try:
            n = len(os.listdir(self._fds)) - 1  # (listing the folder opens one: it is listed too)
        except OSError:
            self._fds = None
            return
        out.append((OPEN_FILES[0], max(n, 0), OPEN_FILES[1]))

    def _collector(self, out: list[Sample]) -> None:
        if not self._gc:
            return
        try:
            stats = gc.get_stats()
            count = gc.get_count()
            for generation, entry in enumerate(stats):
                name, unit = gc_collections(generation)
                out.append((name, int(entry["collections"]), unit))
            # (gc.get_count()'s other entries are collections of the younger generation, not objects)
            out.append((GC_OBJECTS[0], int(count[0]), GC_OBJECTS[1]))
        except Exception as exc:  # (an interpreter whose gc module differs)
            self._gc = False
            _safety.defer_error("runtime metrics: gc", exc)


class GcPauses:
    """The ``gc.callbacks`` callback (:attr:`callback`): times each collection on the thread that runs
    it and keeps :data:`Pause` tuples for the writer (at most ``capacity``; more are counted in
    ``lost``)."""

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns, capacity: int = MAX_PENDING_PAUSES):
        self.pending: deque[Pause] = deque()
        self.lost = 0
        #: The first exception the callback met (the writer reports it): raised in a collection, it
        #: would be printed as "Exception ignored in garbage collection callback".
        self.error: BaseException | None = None
        self._clock = clock
        self._capacity = capacity
        self._start = 0
        #: What is registered: one bound method, so that it is found (and removed) by equality.
        self.callback = self._on_gc

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Runs inside a collection, on whatever thread allocated: no lock, no logging, no I/O, and
        # nothing allocated but the tuple (a collection is never re-entered, and never runs on two
        # threads at once). A thread that never recorded is known by its ident here, by its name and
        # native id in the writer.
        try:
            end = self._clock()
            if phase == "start":
                self._start = end
                return
            start = self._start
            if not start:  # (registered during this collection)
                return
            self._start = 0
            pending = self.pending
            if len(pending) < self._capacity:
                try:  # (a thread that records has a state; looking runs no Python code)
                    thread: ThreadInfo | int = thread_local.state.info
                except AttributeError:
                    thread = get_ident()
                pending.append(
                    (start, end, info["generation"], info["collected"], info["uncollectable"], thread)
                )
            else:
                self.lost += 1
        except Exception as exc:
            if self.error is None:
                self.error = exc

    def install(self) -> None:
        """Register the callback (once, however often this is called); forget earlier pauses."""
        self.remove()
        self.pending.clear()
        self.lost = 0
        self._start = 0
        gc.callbacks.append(self.callback)

    def remove(self) -> None:
        while self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    @property
    def running(self) -> int:
        """When the collection under way began (0: none is)."""
        return self._start

    def take(self) -> tuple[list[Pause], int, BaseException | None]:
        """The pauses kept so far, how many were lost, and the callback's error (each only once)."""
        pending = self.pending
        pauses: list[Pause] = []
        for _ in range(len(pending)):  # (what came before this call: the callback may go on adding)
            try:
                pauses.append(pending.popleft())
            except IndexError:  # (install() emptied it meanwhile)
                break
        lost, self.lost = self.lost, 0
        error, self.error = self.error, None
        return pauses, lost, error


#: The one callback of this process (a second session reuses it: it is never registered twice).
gc_pauses = GcPauses()


class RuntimeSource:
    """A session's runtime metrics: a round source that gives the writer the counter samples (as of
    now) and the collector's pauses since its last round, as records.

    ``sampler`` ``None``: pauses only (a session that feeds nothing but trace lines)."""

    def __init__(
        self, sampler: ProcessSampler | None, pauses: GcPauses, min_interval_ns: int, min_pause_ns: int = 0
    ) -> None:
        self.sampler = sampler
        self.pauses = pauses
        self.min_interval_ns = min_interval_ns
        self.min_pause_ns = min_pause_ns
        self._last_sample: int | None = None
        # GC %: the time in collections since the last sample that had it, and when that was.
        self._gc_ns = 0
        self._gc_since = time.perf_counter_ns()
        #: False once detached (the writer may be iterating over the session's sources: it stays there).
        self.active = True

    def resume(self) -> None:
        """Active again after :func:`detach`: the next round samples, GC % counts from now."""
        self.active = True
        self._last_sample = None
        self._gc_ns, self._gc_since = 0, time.perf_counter_ns()

    def __call__(self, session: Session) -> list[tuple[Any, ThreadInfo]]:
        out: list[tuple[Any, ThreadInfo]] = []
        self._add_pauses(session, out)
        sampler = self.sampler
        if sampler is not None and self.active:
            t = time.perf_counter_ns()
            last = self._last_sample
            if last is None or t - last >= self.min_interval_ns or session.stopping:
                self._last_sample = t
                me = threading.current_thread()
                info = ThreadInfo(os.getpid(), threading.get_native_id(), me.name)
                found = sampler.sample()
                self._gc_time(t, found)
                for name, value, unit in found:
                    out.append((Record("counter", name, t, t, 1, {"unit": unit}, value=value), info))
        return out

    def _gc_time(self, t: int, out: list[Sample]) -> None:
        """GC %: the share of the time since the last sample that had it spent in collections. A pause
        counts where it falls: the part of one that runs at a sample (its thread may let others run
        while finalizers and weakref callbacks do) before it, the rest after."""
        since = self._gc_since
        if t - since < MIN_CPU_WINDOW_NS:
            return
        running = self.pauses.running
        spent = self._gc_ns + (t - max(running, since) if running and running < t else 0)
        out.append((GC_TIME[0], round(100.0 * spent / (t - since), 2), GC_TIME[1]))
        self._gc_ns, self._gc_since = 0, t

    def _add_pauses(self, session: Session, out: list[tuple[Any, ThreadInfo]]) -> None:
        pauses, lost, error = self.pauses.take()
        if lost:
            session.count_drop("queue_full", "span", lost)
        if error is not None:
            _safety.defer_error("runtime metrics: gc callback", error)
        if not pauses:
            return
        since = self._gc_since
        self._gc_ns += sum(p[1] - max(p[0], since) for p in pauses if p[1] > since)
        shortest = self.min_pause_ns
        if shortest:
            pauses = [p for p in pauses if p[1] - p[0] >= shortest]
        idents = {p[5] for p in pauses if isinstance(p[5], int)}
        threads = self._threads(idents) if idents else {}
        for start, end, generation, collected, uncollectable, thread in pauses:
            known, name = threads[thread] if isinstance(thread, int) else (thread, thread.name)
            info = session.written_thread(known)  # (a name that holds a credential: scrubbed)
            thread_name = info.name if name == known.name else name
            rec = SpanRecord.of(f"GC gen {generation}", 1, start, end)
            rec.metadata = {
                "track": GC_TRACK,
                "category": GC_CATEGORY,
                "generation": generation,
                "collected": collected,
                "uncollectable": uncollectable,
                "thread": thread_name,
            }
            out.append((rec, info))

    def _threads(self, idents: set[int]) -> dict[int, tuple[ThreadInfo, str]]:
        """Per thread that collected (by ``get_ident()``): the thread to write its pauses under, and
        its name. A thread that has ended since (or one ``threading`` never knew) is named so, and its
        pauses go under the writer's thread (the track is the process's). (An ident may be reused by a
        thread started after the first one ended, within a round: its name is then the newer one's.)"""
        pid = os.getpid()
        found: dict[int, tuple[ThreadInfo, str]] = {}
        for t in threading.enumerate():
            if t.ident in idents and t.native_id is not None:
                found[t.ident] = (ThreadInfo(pid, t.native_id, t.name), t.name)
        if len(found) < len(idents):
            me = threading.current_thread()
            writer = ThreadInfo(pid, threading.get_native_id(), me.name)
            for ident in idents - found.keys():
                found[ident] = (writer, "(a thread that has ended)")
        return found


def source_of(session: Session | None) -> RuntimeSource | None:
    """The runtime source of ``session``, if it has one."""
    if session is not None:
        for source in session.round_sources:
            if isinstance(source, RuntimeSource):
                return source
    return None


def attached(session: Session | None) -> bool:
    """Whether ``session`` records runtime metrics now."""
    source = source_of(session)
    return source is not None and source.active


def attach(session: Session) -> RuntimeSource:
    """Record ``session``'s runtime metrics (once: a second call gives the same source)."""
    source = source_of(session)
    if source is not None:
        if not source.active:
            source.resume()
            gc_pauses.install()
            session.nudge()
        return source
    sampler = None if session.format == "none" else ProcessSampler(_proc_dir())
    config = session.config
    source = RuntimeSource(sampler, gc_pauses, int(config.flush_interval * 1e9 / 2), config.gc_min_pause_ns())
    gc_pauses.install()
    session.round_sources.append(source)
    session.nudge()  # (a first sample as the session begins, on the writer's thread)
    return source


def detach(session: Session) -> None:
    """Stop recording ``session``'s runtime metrics (the pauses kept so far are still written)."""
    source = source_of(session)
    if source is not None and source.active:
        source.active = False
        gc_pauses.remove()


def _proc_dir() -> str | None:
    return "/proc/self" if sys.platform.startswith("linux") else None


def _began(session: Session) -> None:
    if session.config.runtime:
        attach(session)


def _before_stop() -> None:
    """The session stops: no more pauses (its last round writes those kept)."""
    if attached(RT.session):
        gc_pauses.remove()


def _ended(session: Session) -> None:
    if attached(session):
        gc_pauses.remove()  # (a stop whose hooks did not run)


def _after_fork_in_child() -> None:
    """A forked child keeps its parent's callbacks: the pauses would be nobody's. The child's own session
    registers it again as it begins (children.py's fork handler, which runs after this one: lifecycle,
    which imports this module, is imported before children.py registers its handlers)."""
    gc_pauses.remove()


_hooks.session_began.append(_began)
_hooks.before_stop.append(_before_stop)
_hooks.session_ended.append(_ended)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
