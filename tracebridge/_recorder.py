"""Recording sessions: levels, the writer thread, and the process lifecycle.

Sources queue records on their thread's deque (see ``_runtime``). The writer thread wakes every
``flush_interval`` seconds, pops what each thread queued, turns records into :class:`~tracebridge.Event`
objects (sanitized, secrets scrubbed) and hands them to the session's sink. When a thread's queue is full,
new records are dropped and counted by the producing thread; the writer marks the gap in the trace.

Lifecycle: ``atexit`` stops an active session under one deadline; ``fork`` flushes in the parent and gives
the child a fresh writer and file of its own (see ``_after_fork_in_child``).
"""

from __future__ import annotations

import atexit
import inspect
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from . import _codec, _hooks, _safety
from ._config import Config
from ._model import (
    CODE_LOCATIONS,
    KINDS,
    RESERVED_KEYS,
    Deferred,
    Event,
    Loss,
    Record,
    SpanRecord,
    Stats,
    ThreadInfo,
    trace_clock_ns,
)
from ._runtime import (
    RT,
    CompactSpan,
    ThreadState,
    _all_threads,
    _forget_dead_threads,
    measure_clock_offset,
    now_ns,
    record_kind,
    thread_state,
    threads_after_fork,
)
from ._sanitize import Counts, clean_str, sanitize_metadata
from .sampling.filters import Directives
from .sampling.pipeline import Pipeline
from .sinks.lines import TraceLines
from .sinks.memory import MemorySink, NullSink

if TYPE_CHECKING:
    from .sinks import Sink

OutputFormat = Literal["perfetto", "json", "memory", "none"]

#: Tracks of their own for asyncio tasks, at most, per recording (see ``Session._task_track``).
MAX_TASK_TRACKS = 256

#: Records converted and written per batch by the writer thread.
WRITE_CHUNK = 4096

# --------------------------------------------------------------------------------------------- sessions


def _default_output_format(output: str | os.PathLike[str] | None) -> OutputFormat:
    if output is None:
        return "memory"
    return "json" if str(output).lower().endswith(".json") else "perfetto"


class Session:
    """A recording session: what :func:`tracebridge.start` returns and :func:`tracebridge.stop` finishes.

    Attributes:
        level: events of this level and below are recorded.
        path: the trace file, or ``None`` for an in-memory session.
        format: ``"perfetto"``, ``"json"`` or ``"memory"``.
        stats: counts recorded (by kind) and dropped (by reason and kind); final once stopped, unless
            ``timed_out`` says that ``stop()`` gave up waiting for the writer.
        events: in-memory sessions: every event, in start order, once stopped.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        level: int,
        output: str | os.PathLike[str] | None,
        fmt: OutputFormat,
        config: Config,
        sink_factory: Callable[[Session], Sink] | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.level = level
        self.pipeline = pipeline
        #: Started by a PerfettoHandler or by trace lines, not by start(): start() may adopt it.
        self.implicit = False
        self.lines = config.trace_lines()
        self.wall_offset_ns = time.time_ns() - trace_clock_ns()
        self._sampling_at_start = pipeline.counts() if pipeline is not None else {}
        self.path: Path | None = None if output is None else Path(output)
        self.format: OutputFormat = fmt
        self.stats = Stats(recorded=dict.fromkeys(KINDS, 0))
        self.events: list[Event] = []
        self.config = config
        self.limits = config.limits
        self.counts = Counts()  # sanitizing done on application threads (under _stats_lock)
        self._writer_counts = Counts()  # sanitizing done by the writer thread
        self.clock_offset = measure_clock_offset()
        self.start_ns = now_ns()
        self.stopped = False
        #: stop() gave up waiting for the writer: the stats are what was counted by then, not final.
        self.timed_out = False
        # In-memory events carry every span's ids; trace files do not hold them, so the writer does not
        # make ids for spans that never needed one.
        self._make_ids = fmt == "memory"
        self._task_tracks: set[str] = set()
        self.open_activities: dict[int, Record] = {}
        self.open_span_sources: list[Callable[[Session], list[tuple[Any, ThreadInfo]]]] = []
        #: Called at the start of every writer round: (record, thread) pairs to write as begun now.
        self.round_sources: list[Callable[[Session], list[tuple[Any, ThreadInfo]]]] = []
        #: The process's name in the trace when a source named it (OpenTelemetry's service.name).
        self.process_name: str | None = None
        self._rename: str | None = None
        self._errors_at_start = sum(_safety.error_counts().values())
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        self._sink_backoff = 0.0
        self._sink_retry_at = 0.0
        #: Per thread id: losses no file has marked yet (the sink failed, or was backing off).
        self._unmarked_gaps: dict[int, tuple[ThreadInfo, Loss]] = {}
        self._writer: threading.Thread | None = None
        self._cond = threading.Condition()
        self._stats_lock = threading.Lock()
        self._wake = False
        self._stopping = False  # stop() has begun: no new activities, threads waiting for room go on
        self._stop_requested = False  # the writer's signal: one last round, then end
        self._last_round_done = False
        # Set by stop(): past it the writer drops what is still queued instead of writing it.
        self._deadline: float | None = None
        self._rounds_requested = 0
        self._rounds_done = 0
        # on_full="block": threads wait on _room for the writer to empty their queues (_waiting of
        # them); _stalled once the writer did not make room within the timeout, until its next round.
        self._room = threading.Condition(threading.Lock())
        self._waiting = 0
        self._stalled = False

    def __repr__(self) -> str:
        where = self.path if self.path is not None else "memory"
        state = "stopped" if self.stopped else "recording"
        return f"<tracebridge.Session level={self.level} {where} {state}>"

    def count_drop(self, reason: str, kind: str, n: int = 1) -> None:
        """Count dropped events (safe from any thread)."""
        with self._stats_lock:
            self.stats.count_drop(reason, kind, n)

    def open_activity(self, aid: int, rec: Record) -> bool:
        """Register an activity begun now; False once the session is stopping."""
        with self._stats_lock:
            if self._stopping:
                return False
            self.open_activities[aid] = rec
            return True

    def close_activity(self, aid: int) -> Record | None:
        with self._stats_lock:
            return self.open_activities.pop(aid, None)

    def add_open_spans(self, source: Callable[[Session], list[tuple[Any, ThreadInfo]]]) -> None:
        """Register a source of spans that are written when they end (OpenTelemetry's): when the
        session stops, ``source(session)`` gives the (record, thread) of those still running, and they
        are written as begun only."""
        if source not in self.open_span_sources:
            self.open_span_sources.append(source)

    def add_counts(self, counts: Counts) -> None:
        """Add sanitizing and scrubbing done on an application thread (safe from any thread)."""
        with self._stats_lock:
            self.counts.sanitized += counts.sanitized
            self.counts.scrubbed += counts.scrubbed

    # -- lifecycle ---------------------------------------------------------------------------------

    def _open(self) -> None:
        self._sink = self._sink_factory(self) if self._sink_factory else self._default_sink()
        if self.pipeline is not None:
            self.pipeline.on_flood_end = self._flood_end
        self._start_writer()

    def _default_sink(self) -> Sink:
        """The sink for the session's output (raises OSError at once when the path cannot be written)."""
        if self.format == "memory":
            return MemorySink(self.events, self.config.max_events)
        if self.format == "none":
            return NullSink()
        assert self.path is not None
        if self.format == "json":
            from .sinks.chrome import ChromeJsonWriter

            return ChromeJsonWriter(self.path)
        from .sinks.perfetto.writer import PerfettoWriter

        start_ts = self.start_ns + self.clock_offset
        return PerfettoWriter(self.path, start_ts=start_ts, compress=self.config.compress)

    def _flood_end(self, key: Any, count: int) -> None:
        """A rate limiter's flood ended: one instant says how many similar events it suppressed."""
        t = now_ns()
        md = {"key": _safety.safe_str(key), "suppressed": count}
        thread_state().push(Record("instant", f"suppressed {count} similar events", t, t, 1, md))

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._run, name="tracebridge-writer", daemon=True)
        self._writer.start()

    def _run(self) -> None:
        token = _safety.inside.set(True)
        try:
            while True:
                with self._cond:
                    if not self._wake and not self._stop_requested:
                        self._cond.wait(self.config.flush_interval)
                    self._wake = False
                    stopping = self._stop_requested
                    requested = self._rounds_requested
                try:
                    self._round(final=stopping)
                except Exception as exc:  # (each step guards itself: this is the last line of defence)
                    _safety.defer_error("writer", exc)
                self._stalled = False  # the writer makes progress: blocked threads may wait for it again
                with self._cond:
                    self._rounds_done = max(self._rounds_done, requested)
                    self._cond.notify_all()
                    self._last_round_done = stopping
                    late = stopping and self.timed_out
                if late:  # stop() gave up waiting: the file is closed (with the stats) here
                    self._close_sink()
                if stopping:
                    return
        finally:
            _safety.inside.reset(token)

    def _request_round(self, timeout: float, stop: bool = False) -> bool:
        """Ask the writer for one more round and wait for it; False on timeout."""
        writer = self._writer
        if writer is None or not writer.is_alive() or threading.current_thread() is writer:
            return False
        deadline = time.monotonic() + timeout
        with self._cond:
            self._rounds_requested += 1
            wanted = self._rounds_requested
            self._wake = True
            if stop:
                self._stop_requested = True
            self._cond.notify_all()
            while self._rounds_done < wanted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def nudge(self) -> None:
        """Ask the writer for a round now, without waiting for it."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def queue_when_room(self, st: ThreadState, rec: Any) -> str | None:
        """``on_full="block"``: wait until the writer has made room in ``st``'s full queue, then queue
        ``rec`` (over the cap once the session is stopping: its last round takes it). Returns ``None``
        when ``rec`` is queued, else why to drop it: ``writer_stalled`` when the writer is dead or made
        no room within the session's ``timeout`` (then, until the writer finishes a round, full queues
        drop at once instead of waiting again); ``queue_full`` on the writer's own thread (it never
        waits for itself) and for a record made while the calling thread waits (a signal handler, a
        finalizer, a log record of a handler that wraps ours)."""
        writer = self._writer
        me = thread_state()
        if writer is None or me.waiting or threading.current_thread() is writer:
            return "queue_full"
        if self._stalled:
            return "writer_stalled"
        deadline = time.monotonic() + self.config.timeout
        cap = RT.buffer_cap
        room = self._room
        buf = st.buf
        me.waiting = True
        try:
            # Nothing in here calls out (no logging, no user code) while the lock is held; the waiter
            # is counted from before it first looks at the queue until it has queued its record, so a
            # writer that empties the queue wakes it, and stop() lets no record of it slip past the
            # last round.
            with room:
                self._waiting += 1
                try:
                    while True:
                        if len(buf) < cap or self._stopping:
                            buf.append(rec)
                            return None
                        if self._stalled:
                            return "writer_stalled"
                        left = deadline - time.monotonic()
                        if left <= 0 or not writer.is_alive():
                            break
                        self.nudge()  # (lock order: _room, then _cond; the writer never holds both)
                        room.wait(min(left, 0.05))
                finally:
                    self._waiting -= 1
                    if self._stopping:
                        room.notify_all()  # _release_waiters waits for the waiters to leave
        finally:
            me.waiting = False
        self._stall(left <= 0)  # (outside the lock: it logs)
        return "writer_stalled"

    def _stall(self, timed_out: bool) -> None:
        if self._stalled:
            return
        self._stalled = True
        why = f"made no room within {self.config.timeout}s" if timed_out else "is not running"
        _safety.internal_error(
            "on_full=block",
            TimeoutError(f"the writer {why}: full queues drop events (writer_stalled) until it catches up"),
            raise_in_strict=False,
        )

    def _room_made(self) -> None:
        """The writer emptied part of a queue: wake the threads waiting for room."""
        with self._room:
            self._room.notify_all()

    def _release_waiters(self) -> None:
        """Stopping: threads waiting for room queue their records (the last round writes them)."""
        with self._room:
            self._room.notify_all()
            self._room.wait_for(lambda: self._waiting == 0, timeout=1.0)
        # (The writer's last round is requested after this: every record a waiter queued is in it.)

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything recorded so far; True if the writer finished within ``timeout``."""
        if self.stopped:
            return True
        done = self._request_round(self.config.timeout if timeout is None else timeout)
        _safety.raise_pending()
        return done

    def _mark_stopping(self) -> None:
        """No new activities from now on; threads waiting for room queue their records at once."""
        with self._stats_lock:
            self._stopping = True

    def _finish(self, timeout: float) -> None:
        self._mark_stopping()
        self._release_waiters()
        # The writer stops writing at the deadline and then needs a moment to count and close.
        self._deadline = time.monotonic() + timeout
        done = self._request_round(timeout + max(1.0, timeout / 2), stop=True)
        if not done and self._writer is not None:
            with self._cond:  # (the writer may have finished just now: then the file is closed here)
                finished = self._last_round_done
                self.timed_out = not finished and self._writer.is_alive()
            if self.timed_out:
                _safety.internal_error(
                    "session.stop",
                    TimeoutError(
                        f"the writer did not finish within {timeout}s (a stuck sink, or a very busy "
                        "machine): the session's stats are not final; the writer closes the trace when "
                        "it finishes"
                    ),
                    raise_in_strict=False,
                )
                return
            if not finished:  # the writer died: what is still queued is counted, the file closed here
                for st in _all_threads():
                    self._count_drops(st)
                    self._discard(st.buf, len(st.buf), "writer_stalled")
        self._close_sink()

    # -- the writer's round ------------------------------------------------------------------------

    def _round(self, final: bool = False) -> None:
        if final:
            self._sink_retry_at = 0.0  # the last round tries the file once more, whatever the back-off
        self._drain_all()
        pipe = self.pipeline
        if pipe is not None and pipe.tail_stages:
            try:  # a tail sampler releases the traces it has waited long enough for
                self._write_items(pipe.tail([]))
            except Exception as exc:
                _safety.defer_error("writer.sampling", exc)
        if final and self.pipeline is not None:
            # Traces a tail sampler still holds are decided now; floods still going on are reported
            # (on this thread: the second pass writes those reports).
            try:
                self._write_items(self.pipeline.flush())
            except Exception as exc:
                _safety.defer_error("writer.sampling", exc)
            self._drain_all()
        if final:  # gaps no batch has marked yet (the file failed, then nothing more came): mark them
            for info, _ in list(self._unmarked_gaps.values()):
                self._sink_retry_at = 0.0  # (a last chance each, as the stats get when it closes)
                self._write(info, [], None)
        _forget_dead_threads()
        if self._sink is not None:
            try:
                self._sink.flush()
            except Exception as exc:
                _safety.defer_error("sink.flush", exc)

    def rename_process(self, name: str) -> None:
        """Name the process in the trace (the writer does it in its next round)."""
        self.process_name = self._rename = name

    def _apply_rename(self) -> None:
        name = self._rename
        if name is not None:
            self._rename = None
            rename = getattr(self._sink, "rename_process", None)
            if rename is not None:
                try:
                    rename(name)
                except Exception as exc:
                    _safety.defer_error("sink.rename_process", exc)

    def _drain_all(self) -> None:
        for source in self.round_sources:
            try:
                begun = source(self)
            except Exception as exc:
                _safety.defer_error("writer round source", exc)
                continue
            by_thread: dict[ThreadInfo, list[Any]] = {}
            for rec, info in begun:
                by_thread.setdefault(info, []).append(rec)
            for info, records in by_thread.items():
                self._write(info, self._events(records, info), None)
        for st in _all_threads():
            try:
                self._drain(st)
            except Exception as exc:
                _safety.defer_error("writer", exc)

    def _count_drops(self, st: ThreadState) -> Loss | None:
        """Count the records ``st`` could not queue since the last call; the loss they make."""
        dropped, first, last = st.take_drops()
        if not dropped:
            return None
        by_reason: dict[str, int] = {}
        for (reason, kind), n in dropped.items():
            self.count_drop(reason, kind, n)
            by_reason[reason] = by_reason.get(reason, 0) + n
        return Loss(by_reason, first + self.clock_offset, last + self.clock_offset)

    def _drain(self, st: ThreadState) -> None:
        """Write what ``st`` has queued, a chunk at a time (memory stays bounded however much is
        queued). Past the stop deadline, what is left is counted as dropped (``stop_timeout``)."""
        loss = self._count_drops(st)
        buf = st.buf
        pop = buf.popleft
        left = len(buf)
        info = self._thread_info(st)
        while left > 0 or loss is not None:
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._discard(buf, left, "stop_timeout")  # (in bulk: a late writer must end soon)
                return
            n = min(left, WRITE_CHUNK)
            left -= n
            records = [pop() for _ in range(n)]
            if self._waiting:
                self._room_made()
            if st.deferred:
                records = self._materialize(records)
            pipe = self.pipeline
            if pipe is not None and pipe.tail_stages:
                # (Tail stages read records: spans queued compact before sampling began are expanded.)
                records = [SpanRecord.of(*r) if type(r) is tuple else r for r in records]
                self._write_items(pipe.tail([(info, rec) for rec in records]), info, loss)
            else:
                self._write(info, self._events(records, info), loss)
            loss = None

    def _discard(self, buf: Any, n: int, reason: str) -> None:
        """Take ``n`` records off ``buf`` unwritten, counted as dropped for ``reason`` (one lock)."""
        kinds: dict[str, int] = {}
        pop = buf.popleft
        for _ in range(n):
            try:
                kind = record_kind(pop())
            except IndexError:
                break
            kinds[kind] = kinds.get(kind, 0) + 1
        with self._stats_lock:
            for kind, count in kinds.items():
                self.stats.count_drop(reason, kind, count)

    def _materialize(self, records: list[Any]) -> list[Any]:
        out: list[Any] = []
        for rec in records:
            if isinstance(rec, Deferred):
                try:
                    out.extend(rec.materialize(self))
                except Exception as exc:
                    _safety.defer_error("writer.materialize", exc)
                    self.count_drop("internal_error", rec.kind)
            else:
                out.append(rec)
        return out

    def _write_items(
        self, items: list[tuple[ThreadInfo, Any]], info: ThreadInfo | None = None, loss: Loss | None = None
    ) -> None:
        """Write (thread, record) pairs, a batch per thread (a tail sampler may release other threads'
        records held from earlier rounds)."""
        by_thread: dict[ThreadInfo, list[Any]] = {}
        if info is not None:
            by_thread[info] = []
        for thread, rec in items:
            by_thread.setdefault(thread, []).append(rec)
        for thread, records in by_thread.items():
            self._write(thread, self._events(records, thread), loss if thread is info else None)

    def _events(self, records: list[Any], info: ThreadInfo) -> list[Event]:
        events: list[Event] = []
        recorded = self.stats.recorded
        start = self.start_ns
        for rec in records:
            compact = type(rec) is tuple
            if compact:
                if rec[2] < start:
                    self.count_drop("outside_session", "span")
                    continue
            elif rec.start_ns < start and rec.kind == "span":
                self.count_drop("outside_session", "span")
                continue
            try:
                ev = self._compact_event(rec, info) if compact else self._to_event(rec, info)
            except Exception as exc:
                _safety.defer_error("writer.convert", exc)
                self.count_drop("internal_error", record_kind(rec))
                continue
            if ev.end_ns is not None:  # (a span written as begun is counted when it ends)
                recorded[ev.kind] = recorded.get(ev.kind, 0) + 1
            events.append(ev)
        return events

    def _thread_info(self, st: ThreadState) -> ThreadInfo:
        t = st.thread()
        if t is not None and t.name != st.info.name:
            st.info = replace(st.info, name=t.name)
        return st.info

    def _write(self, info: ThreadInfo, events: list[Event], loss: Loss | None) -> None:
        """Hand a batch to the sink. A sink either takes a batch or raises having written none of it;
        after a failure the session backs off (1 s, doubling up to 30 s) and counts what it could not
        write as ``sink_error``. Trace lines see every event, whatever the file could take."""
        if not events and loss is None and info.tid not in self._unmarked_gaps:
            return
        if self._rename is not None:  # named while these events were made: before them
            self._apply_rename()
        sink = self._sink
        written = 0
        reason = "sink_error"
        # Losses the sink has not been told about yet (batches lost to errors or skipped while backing
        # off), so that the next batch it takes is marked as following a gap.
        _, earlier = self._unmarked_gaps.pop(info.tid, (info, None))
        gap = earlier if loss is None else loss.merge(earlier)
        if sink is not None and time.monotonic() >= self._sink_retry_at:
            try:
                written = sink.write(info, events, gap)
                self._sink_backoff = 0.0
                reason = sink.drop_reason
                gap = None
            except Exception as exc:
                self._sink_backoff = min(30.0, max(1.0, self._sink_backoff * 2))
                self._sink_retry_at = time.monotonic() + self._sink_backoff
                _safety.defer_error("sink.write", exc)
        if written < len(events):
            lost = events[written:]
            here = Loss(
                {reason: len(lost)},
                min(ev.start_ns for ev in lost),
                max(ev.start_ns if ev.end_ns is None else ev.end_ns for ev in lost),
            )
            gap = here.merge(gap)
            for ev in lost:
                self.stats.recorded[ev.kind] -= 1
                self.count_drop(reason, ev.kind)
        if gap is not None:
            self._unmarked_gaps[info.tid] = (info, gap)
        lines = self.lines
        if lines is not None and events:
            try:
                lines.observe(events, self.wall_offset_ns)
            except Exception as exc:
                _safety.defer_error("trace_lines", exc)

    def _close_sink(self) -> None:
        sink = self._sink
        if sink is None:
            return
        with self._stats_lock:
            still_open = list(self.open_activities.values())
        open_spans: list[tuple[Any, ThreadInfo]] = []
        for source in self.open_span_sources:
            try:
                open_spans += source(self)
            except Exception as exc:
                _safety.defer_error("open spans", exc)
        with self._stats_lock:
            self.stats.open_activities = len(still_open) + len(open_spans)
            self.stats.sanitized = self.counts.sanitized + self._writer_counts.sanitized
            self.stats.scrubbed = self.counts.scrubbed + self._writer_counts.scrubbed
        self.stats.internal_errors += sum(_safety.error_counts().values()) - self._errors_at_start
        for hook in _hooks.session_closing:
            try:
                hook(self.stats)
            except Exception as exc:
                _safety.defer_error("session closing hook", exc)
        self._account_sampling()
        try:
            opened = [self._to_event(rec, rec.thread or ThreadInfo(os.getpid(), 0, "")) for rec in still_open]
            for span, info in open_spans:  # on a track of their own: what they enclose is unknown
                span.end_ns = None
                span.overlapping = True
                opened.append(self._to_event(span, info))
            sink.close(self.stats, opened)
        except Exception as exc:
            _safety.defer_error("sink.close", exc)
        self._sink = None

    def sampling_counts(self) -> dict[str, Any]:
        """What each sampling stage kept and dropped in this session, by kind."""
        if self.pipeline is None:
            return {}
        return _counts_since(self.pipeline.counts(), self._sampling_at_start)

    def _account_sampling(self) -> None:
        counts = self.sampling_counts()
        self.stats.sampling.update(counts)
        for entry in counts.values():
            reason = entry.get("reason")
            for kind, n in entry.get("dropped", {}).items():
                if reason and n:
                    self.count_drop(reason, kind, n)

    # -- record -> event ---------------------------------------------------------------------------

    def _task_track(self, task: Any, info: ThreadInfo) -> str | None:
        """The track of an asyncio task's spans that overlap other tasks' (``None``: the thread's
        overlap lanes, once :data:`MAX_TASK_TRACKS` tasks have a track: a server runs tasks without end,
        and a trace is no use with a track for each)."""
        name = clean_str(f"{_safety.safe_str(task)} ({info.name})", 1024)
        tracks = self._task_tracks
        if name not in tracks:
            if len(tracks) >= MAX_TASK_TRACKS:
                return None
            tracks.add(name)
        return name

    def _compact_event(self, rec: CompactSpan, info: ThreadInfo) -> Event:
        """The event of a span queued as a CompactSpan: what ``_to_event`` makes of a span that carries
        nothing but its name, level and times (names that need work take that path)."""
        name, level, start, end = rec
        if len(name) > 1024 or not name.isascii() or "\x00" in name or name.endswith("#"):
            return self._to_event(SpanRecord.of(name, level, start, end), info)
        where = CODE_LOCATIONS.get(name)
        md = (
            {}
            if where is None
            else {"code.filepath": where[0], "code.lineno": where[1], "code.function": where[2]}
        )
        off = self.clock_offset
        return Event("span", name, start + off, end + off, level, md, info.tid, info.name)

    def _to_event(self, rec: Any, info: ThreadInfo) -> Event:
        counts = self._writer_counts
        name = rec.name
        if type(name) is not str:
            name = _safety.safe_str(name)
        md: dict[str, Any] = rec.metadata or {}
        categories: tuple[str, ...] = ()
        track = None
        flows: tuple[int, ...] = ()
        terminating: tuple[int, ...] = ()
        if md:
            md = dict(md)
            if "category" in md:
                categories = _as_strings(md.pop("category"))
            if "track" in md:
                t = md.pop("track")
                track = None if t is None else clean_str(_safety.safe_str(t), 1024)
            if "flows" in md:
                flows = _as_ids(md.pop("flows"))
            if "terminating_flows" in md:
                terminating = _as_ids(md.pop("terminating_flows"))
        if name.endswith("#") and _codec.maybe_encoded(name):
            name, encoded = _codec.decode(name)
            if encoded:
                md = {**encoded, **md}
        if len(name) > 1024 or not name.isascii() or "\x00" in name:
            name = clean_str(name, 1024, counts)
        if md:
            md = sanitize_metadata(md, self.limits, counts)
            if not RESERVED_KEYS.isdisjoint(md):  # the file's own fields: the metadata's go beside them
                md = {f"attribute.{k}" if k in RESERVED_KEYS else k: v for k, v in md.items()}
        off = self.clock_offset
        end = rec.end_ns
        kind = rec.kind
        if kind == "span":
            if rec.overlapping and track is None:
                task = getattr(rec, "_task", None)
                if task is not None:  # an asyncio task's spans that overlap others': a track per task
                    track = self._task_track(task, info)
            where = CODE_LOCATIONS.get(name)
            if where is not None and "code.filepath" not in md:
                md = {**md, "code.filepath": where[0], "code.lineno": where[1], "code.function": where[2]}
            parent = rec.parent
            if self._make_ids or self.lines is not None:  # trace lines carry ids too
                trace_id, span_id = rec.trace_id, rec.span_id
                parent_id = parent.span_id if parent is not None else 0
            else:  # the ids the application asked for, if any (trace files do not hold them)
                trace_id, span_id = rec.ids_made
                parent_id = parent.ids_made[1] if parent is not None else 0
            return Event(
                "span",
                name,
                rec.start_ns + off,
                None if end is None else end + off,
                rec.level,
                md,
                info.tid,
                info.name,
                rec.error,
                categories,
                track,
                flows,
                terminating,
                None,
                None,
                None,
                trace_id,
                span_id,
                parent_id,
                rec.overlapping,
                rec.adjusted_count,
                rec.begun,
            )
        unit = md.pop("unit", None) if kind == "counter" and md else None
        return Event(
            kind,
            name,
            rec.start_ns + off,
            None if end is None else end + off,
            rec.level,
            md,
            info.tid,
            info.name,
            rec.error,
            categories,
            track,
            flows,
            terminating,
            rec.value,
            unit,
            rec.source,
            rec.trace_id,
            rec.span_id,
            0,
            False,
            rec.adjusted_count,
        )


def _counts_since(now: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Stage counts minus the counts at an earlier moment (a stage may serve several sessions)."""
    out: dict[str, Any] = {}
    for label, entry in now.items():
        old = before.get(label, {})
        diff: dict[str, Any] = {}
        for key, value in entry.items():
            if isinstance(value, dict):
                d = {k: n - old.get(key, {}).get(k, 0) for k, n in value.items()}
                d = {k: n for k, n in d.items() if n}
                if d:
                    diff[key] = d
            elif isinstance(value, int):
                if value - old.get(key, 0):
                    diff[key] = value - old.get(key, 0)
            else:
                diff[key] = value
        if any(isinstance(v, (dict, int)) for v in diff.values()):
            out[label] = diff
    return out


def _as_strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (clean_str(value, 256),) if value else ()
    try:
        return tuple(clean_str(_safety.safe_str(v), 256) for v in value if v is not None and v != "")
    except TypeError:
        return (clean_str(_safety.safe_str(value), 256),)


def _as_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        value = (value,)
    out = []
    try:
        for v in value:
            if isinstance(v, int) and 0 < v < (1 << 64):
                out.append(int(v))
    except TypeError:
        pass
    return tuple(out)


# ---------------------------------------------------------------------------------- public entry points

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
        RT.block = cfg.on_full == "block"
        _safety.set_strict(cfg.strict)
        if "otel" in options:
            _otel_changed(cfg.otel)
        if "log_lines" in options:
            _lines_changed(cfg.trace_lines())
        return cfg


def _validate_level(level: Any) -> int:
    if not isinstance(level, int) or isinstance(level, bool) or level < 1:
        raise ValueError(f"level must be an integer >= 1 (1 critical, 2 info, 3+ verbose), got {level!r}")
    return level


def start(
    level: int = 2,
    output: str | os.PathLike[str] | None = None,
    *,
    format: OutputFormat | None = None,
    sampling: Any = None,
    sink: Callable[[Session], Sink] | None = None,
) -> Session:
    """Start recording events of ``level`` and below.

    ``output`` is a trace file (``.json`` for Chrome JSON, anything else for Perfetto protobuf) or ``None``
    to keep events in memory (``Session.events``). ``sampling`` is a stage, a list of stages or a
    :class:`~tracebridge.sampling.Pipeline` (default: ``configure(sampling=...)``). Starting while a
    session is active, a bad level, bad sampling and an unwritable path raise at once.

    .. versionadded:: 0.1
    """
    level = _validate_level(level)
    fmt = format or _default_output_format(output)
    if fmt not in ("perfetto", "json", "memory", "none"):
        raise ValueError(f"format must be 'perfetto', 'json', 'memory' or 'none', got {fmt!r}")
    if fmt in ("perfetto", "json") and output is None:
        raise ValueError(f"format={fmt!r} needs an output path")
    with _session_lock:
        pipeline = _session_pipeline(sampling if sampling is not None else RT.config.sampling)
        current = RT.session
        if current is not None:
            if not current.implicit:
                raise RuntimeError(
                    f"a tracebridge session is already active ({current!r}); call tracebridge.stop() first"
                )
            if current.format != "none":
                if output is None or current.path is None or not _same_file(current.path, output):
                    raise RuntimeError(
                        f"tracebridge is already recording into {current.path} (a PerfettoHandler started "
                        f"it); start(output={str(current.path)!r}) joins that recording, or stop() it first"
                    )
                return _adopt(current, level, pipeline if sampling is not None else None)
            _stop(None, resume=False)  # a session that only fed trace lines: this one takes over
        return _begin(level, output, fmt, pipeline, sink)


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
        hook()
    session = Session(level, output, fmt, RT.config, sink, pipeline)
    session.implicit = implicit
    _discard_stale_records(session)
    session._open()
    RT.session = session
    RT.pipeline = pipeline
    RT.level = level
    _update_compact()
    return session


def _settle(session: Session) -> None:
    """Trace lines, sampling or the OpenTelemetry bridge are about to start on ``session``: what is
    queued (records that ended before) is written first, as it was recorded. They apply to what ends
    from now on, and never see a CompactSpan tuple, which has no ids or parent to give them."""
    RT.compact = False
    session._request_round(session.config.timeout)


def _update_compact() -> None:
    """Whether plain spans may be queued as CompactSpan tuples now (see ``_runtime``): the session writes
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
    _update_compact()
    return session


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    return os.path.abspath(os.fspath(a)) == os.path.abspath(os.fspath(b))


def record_into(path: str | os.PathLike[str], level: int = 2) -> Session:
    """The session recording into ``path``; one is started (implicit) if none is active.

    Used by :class:`tracebridge.logging.PerfettoHandler`: a handler and a session (or two handlers) that
    name the same file share one recording. Raises ``ValueError`` when another file is being recorded.
    """
    level = _validate_level(level)
    with _session_lock:
        current = RT.session
        if current is not None and current.implicit and current.format == "none":
            _stop(None, resume=False)
            current = None
        if current is None:
            pipeline = _session_pipeline(RT.config.sampling)
            return _begin(level, path, _default_output_format(path), pipeline, implicit=True)
        if current.path is not None and _same_file(current.path, path):
            return current
        raise ValueError(
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
            _update_compact()
        return
    if lines is not None:
        _begin(lines.max_level, None, "none", _session_pipeline(RT.config.sampling), implicit=True)


def _otel_changed(value: Any) -> None:
    """configure(otel=...) took effect. The bridge works where spans are decided (the pipeline path),
    so a session with no sampling gets an empty pipeline while it is on."""
    if not value:
        RT.bridge = None
        _update_compact()
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
        _begin(2, None, "none", _session_pipeline(RT.config.sampling), implicit=True)
    elif RT.pipeline is None:
        RT.pipeline = Pipeline([])
    _update_compact()


def _session_pipeline(sampling: Any) -> Pipeline | None:
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
    for st in _all_threads():
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
        _last_session[0] = session
        if session.format == "memory":
            session.events.sort(key=_start_key)
        if resume and not session.implicit and (RT.bridge is not None or RT.config.trace_lines() is not None):
            lines = RT.config.trace_lines()
            level = max(2, lines.max_level if lines is not None else 2)
            _begin(level, None, "none", _session_pipeline(RT.config.sampling), implicit=True)
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


# ------------------------------------------------------------------------------------------------- fork


def _before_fork() -> None:
    session = RT.session
    if session is not None and not session.stopped:
        session._request_round(min(1.0, session.config.timeout))


def _child_path(path: Path, pid: int) -> Path:
    name = path.name
    for ext in (".perfetto-trace", ".pftrace", ".json"):
        if name.endswith(ext):
            return path.with_name(f"{name[: -len(ext)]}.{pid}{ext}")
    return path.with_name(f"{name}.{pid}")


def _after_fork_in_child() -> None:
    global _session_lock
    # Locks held by threads that do not exist in the child must not be inherited held.
    _session_lock = threading.RLock()
    inherited = threads_after_fork()
    parent = RT.session
    if parent is None or parent.stopped:
        return
    RT.level = 0
    RT.session = None
    RT.pipeline = None
    RT.compact = False
    path = None if parent.path is None else _child_path(parent.path, os.getpid())
    pipeline = parent.pipeline
    if pipeline is not None:
        pipeline.after_fork()
    try:
        child = Session(parent.level, path, parent.format, parent.config, parent._sink_factory, pipeline)
        if inherited:
            child.count_drop("fork_inherited", "span", inherited)
        child._open()
    except Exception as exc:
        _safety.internal_error("fork", exc, raise_in_strict=False)
        return
    RT.session = child
    RT.pipeline = pipeline
    _update_compact()
    RT.level = child.level


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------------------- shared helpers


def source_failed(where: str, kind: str, exc: Exception) -> None:
    """A source could not record an event because of an internal error: count the event dropped,
    report the error (raised in strict mode)."""
    session = RT.session
    if session is not None:
        session.count_drop("internal_error", kind)
    _safety.internal_error(where, exc)
