"""A recording session: its state and stats, the writer thread that drains the threads' queues into
the sink (rounds, back-off after sink errors, gaps marked), and back-pressure (``on_full``)."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .. import _hooks, _safety
from .._accel import speedups
from .._config import Config
from .._model import (
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
    as_event,
    trace_clock_ns,
)
from .._sanitize import Counts, is_secret_key, may_hold_secret, scrub_text
from ..sampling.pipeline import Pipeline
from ..sinks.memory import MemorySink, NullSink
from .convert import EventConversion
from .exits import signals_held
from .runtime import (
    RT,
    ThreadState,
    all_threads,
    forget_dead_threads,
    measure_clock_offset,
    now_ns,
    record_kind,
    thread_state,
)

if TYPE_CHECKING:
    from ..sinks import Sink

OutputFormat = Literal["perfetto", "json", "memory", "none"]

#: Metadata keys the writer gives a meaning of its own (the compiled step leaves spans with them to Python).
SPECIAL_KEYS = frozenset({"category", "track", "flows", "terminating_flows"}) | RESERVED_KEYS
if speedups is not None:  # the events the compiled step makes start as copies of this one; records it reads
    speedups.configure_events(Event("span", "", 0, 0), tuple(f.name for f in fields(Event)))
    speedups.configure_records(Record, logging.LogRecord)

#: Losses that mean the sink or the writer failed (reported on stderr when the session ends).
FAULT_REASONS = frozenset({"sink_error", "writer_stalled", "stop_timeout", "internal_error"})

#: Records converted and written per batch by the writer thread.
WRITE_CHUNK = 4096
#: Events per write when a batch did not fit (a disk filling up): what still fits is written.
WRITE_PIECE = 64


def default_output_format(output: str | os.PathLike[str] | None) -> OutputFormat:
    if output is None:
        return "memory"
    return "json" if str(output).lower().endswith(".json") else "perfetto"


class Session(EventConversion):
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
        #: What started an implicit session, as errors name it ("PerfettoHandler", ...).
        self.started_by = "PerfettoHandler"
        self.lines = config.trace_lines()
        self.wall_offset_ns = time.time_ns() - trace_clock_ns()
        self._sampling_at_start = pipeline.counts() if pipeline is not None else {}
        #: Absolute (as it was when the session began: a later chdir changes nothing).
        self.path: Path | None = None if output is None else Path(os.path.abspath(output))
        #: A child process's session: the trace file of the recording it belongs to (see children.py).
        self.root: Path | None = None
        #: The first packet sequence id of its Perfetto file (a child's: a range of its own).
        self.first_sequence = 1
        #: After the file is closed: the packet sequence id the next process appended to it gets.
        self.next_sequence: int | None = None
        self._children_pending = False
        #: Child processes started while this session recorded (forked, or spawned: see children.py).
        self.children_started = 0
        #: The clock snapshots of the file and of the children appended to it (merge.append_traces).
        self.merged_snapshots: dict[tuple[int, ...], int] | None = None
        #: How many child processes' traces were appended to the file (see children.py).
        self.children_added = 0
        self.format: OutputFormat = fmt
        self.stats = Stats(recorded=dict.fromkeys(KINDS, 0))
        self.events: list[Event] = []
        self.config = config
        self.limits = config.limits
        #: Threads whose names hold a credential: the name written instead (see _thread_info).
        self._scrubbed_threads: dict[ThreadInfo, ThreadInfo] = {}
        #: What the compiled conversion calls on text that may hold a credential (None: scrubbing is off).
        self._text_check = (
            None if self.limits.secret_keys is None else functools.partial(scrub_text, limits=self.limits)
        )
        #: What the compiled conversion reads to tell text and metadata that need no work (the sanitizer's
        #: cache of keys, and what fills it for a key not seen yet).
        self._plain_checks = (
            self.limits.secret_cache,
            self.limits.max_string,
            SPECIAL_KEYS,
            self._text_check,
            functools.partial(is_secret_key, limits=self.limits),
        )
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
        self._causes_at_start = _safety.cause_counts()
        self._sink_factory = sink_factory
        self._sink: Sink | None = None
        self._sink_backoff = 0.0
        self._sink_retry_at = 0.0
        #: Per thread id: losses no file has marked yet (the sink failed, or was backing off).
        self._unmarked_gaps: dict[int, tuple[ThreadInfo, Loss]] = {}
        self._writer: threading.Thread | None = None
        self._busiest = 0  # the most records the current round found queued on one thread
        self._cond = threading.Condition()
        self._stats_lock = threading.Lock()
        self._wake = False
        self._stopping = False  # stop() has begun: no new activities, threads waiting for room go on
        self._stop_requested = False  # the writer's signal: one last round, then end
        self._last_round_done = False
        self._stats_settled = False
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
        start_ts = self.start_ns + self.clock_offset
        if self.format == "json":
            from ..sinks.chrome import ChromeJsonWriter

            return ChromeJsonWriter(self.path, start_ts=start_ts)
        from ..sinks.perfetto.writer import PerfettoWriter

        writer = PerfettoWriter(
            self.path,
            start_ts=start_ts,
            compress=self.config.compress,
            first_sequence=self.first_sequence,
            limits=self.limits,
        )
        self.add_counts(writer.counts)  # (the command line's credentials)
        return writer

    def _flood_end(self, key: Any, count: int) -> None:
        """A rate limiter's flood ended: one instant says how many similar events it suppressed."""
        t = now_ns()
        md = {"key": _safety.safe_str(key), "suppressed": count}
        thread_state().push(Record("instant", f"suppressed {count} similar events", t, t, 1, md))

    def _start_writer(self) -> None:
        self._writer = threading.Thread(target=self._run, name="tracebridge-writer", daemon=True)
        with signals_held():  # (the writer is born blocking them: see exits.signals_held)
            self._writer.start()

    def _run(self) -> None:
        token = _safety.inside.set(True)
        try:
            busy = False
            while True:
                with self._cond:
                    # A round that took a full chunk from some thread is followed by the next at once:
                    # a loop that records that fast would fill its queue while the writer slept.
                    if not self._wake and not self._stop_requested and not busy:
                        self._cond.wait(self.config.flush_interval)
                    self._wake = False
                    stopping = self._stop_requested
                    requested = self._rounds_requested
                self._busiest = 0
                try:
                    self._round(final=stopping)
                except Exception as exc:  # (each step guards itself: this is the last line of defence)
                    _safety.defer_error("writer", exc)
                busy = self._busiest >= WRITE_CHUNK
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

    @property
    def stopping(self) -> bool:
        """``stop()`` has begun: the writer's next round is its last, or close to it."""
        return self._stopping

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
                self._settle_stats()
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
                for st in all_threads():
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
        forget_dead_threads()
        if self._sink is not None:
            try:
                self._sink.flush()
            except Exception as exc:
                _safety.defer_error("sink.flush", exc)

    def rename_process(self, name: str) -> None:
        """Name the process in the trace (the writer does it in its next round)."""
        counts = Counts()
        name = scrub_text(name, self.limits, counts)
        self.add_counts(counts)
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
        for st in all_threads():
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
        take = getattr(buf, "take", None)  # (compiled: a RecordQueue hands over a run at once)
        left = len(buf)
        self._busiest = max(self._busiest, left)
        info = self._thread_info(st)
        while left > 0 or loss is not None:
            if self._deadline is not None and time.monotonic() > self._deadline:
                self._discard(buf, left, "stop_timeout")  # (in bulk: a late writer must end soon)
                return
            n = min(left, WRITE_CHUNK)
            left -= n
            records = take(n) if take is not None else [pop() for _ in range(n)]
            if self._waiting:
                self._room_made()
            try:
                if st.deferred:
                    records = self._materialize(list(records), info)
                pipe = self.pipeline
                if pipe is not None and pipe.tail_stages:
                    # (Tail stages read records: spans queued compact before sampling began are expanded.)
                    records = [SpanRecord.of(*r) if type(r) is tuple else r for r in records]
                    self._write_items(pipe.tail([(info, rec) for rec in records]), info, loss)
                else:
                    self._write(info, self._events(records, info), loss)
            except Exception as exc:  # (each step guards itself: a chunk lost here is still counted)
                _safety.defer_error("writer", exc)
                self._lost(info, records, loss)
            loss = None

    def _lost(self, info: ThreadInfo, records: list[Any], loss: Loss | None) -> None:
        """Records taken off a queue that could not be converted or written: counted as dropped
        (``internal_error``), and a gap the next batch of the thread marks."""
        kinds: dict[str, int] = {}
        for rec in records:
            kind = record_kind(rec)
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind, count in kinds.items():
            self.count_drop("internal_error", kind, count)
        t = now_ns() + self.clock_offset
        here = Loss({"internal_error": len(records)}, t, t).merge(loss)
        _, earlier = self._unmarked_gaps.pop(info.tid, (info, None))
        self._unmarked_gaps[info.tid] = (info, here.merge(earlier))

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

    def _materialize(self, records: list[Any], info: ThreadInfo) -> list[Any]:
        if speedups is not None and self.pipeline is None:
            # Compiled: the commonest ended OpenTelemetry spans become their events here (_events counts
            # them); the other Deferred records go through _materialize_one, in their order.
            made = speedups.finished_events(
                records,
                self,
                self.start_ns,
                self.wall_offset_ns,
                self.clock_offset,
                info.tid,
                info.name,
                CODE_LOCATIONS,
                self._plain_checks,
                self._materialize_one,
            )
            if made is not None:
                records, outside = made
                if outside:
                    self.count_drop("outside_session", "span", outside)
                return records
        out: list[Any] = []
        for rec in records:
            if isinstance(rec, Deferred):
                try:  # (as _materialize_one does: inlined, a call less per record)
                    out.extend(rec.materialize(self))
                except Exception as exc:
                    _safety.defer_error("writer.materialize", exc)
                    self.count_drop("internal_error", rec.kind)
            else:
                out.append(rec)
        return out

    def _materialize_one(self, rec: Deferred) -> list[Any]:
        """The records ``rec`` stands for (none when it fails: counted as an ``internal_error``)."""
        try:
            return rec.materialize(self)
        except Exception as exc:
            _safety.defer_error("writer.materialize", exc)
            self.count_drop("internal_error", rec.kind)
            return []

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
        recorded = self.stats.recorded
        start = self.start_ns
        if speedups is not None:
            # Compiled: the commonest spans, log messages and instants become their events; other records
            # stay in place for the loop below (objects too when ids are wanted: trace lines, in memory).
            objects = None if self._make_ids or self.lines is not None else self._plain_checks
            # (Compact events, where the sink takes them: spans that need nothing else cost no Event.)
            compact = getattr(type(self._sink), "takes_compact", False) is True and self.lines is None
            made, outside, left, logs, instants = speedups.span_events(
                records, start, self.clock_offset, info.tid, info.name, CODE_LOCATIONS, objects, compact
            )
            if outside:
                self.count_drop("outside_session", "span", outside)
            if len(made) > left + logs + instants:
                recorded["span"] = recorded.get("span", 0) + len(made) - left - logs - instants
            if logs:
                recorded["log"] = recorded.get("log", 0) + logs
            if instants:
                recorded["instant"] = recorded.get("instant", 0) + instants
            if not left:
                return made  # type: ignore[no-any-return]
            if type(made) is not list:  # (an EventBatch: what it left is converted in its place)
                return made.settled(self._converted(made.leftovers(), info, True))  # type: ignore[no-any-return]
            records = made
        return self._converted(records, info)

    def _converted(self, records: Sequence[Any], info: ThreadInfo, in_place: bool = False) -> list[Any]:
        """The events of ``records`` (each left out that is dropped, or, ``in_place``, None in its place)."""
        recorded = self.stats.recorded
        start = self.start_ns
        events: list[Any] = []
        for rec in records:
            compact = type(rec) is tuple
            if compact and len(rec) == 5:  # (a compact event, made by the compiled step)
                events.append(rec)
                continue
            if compact:
                if rec[2] < start:
                    self.count_drop("outside_session", "span")
                    if in_place:
                        events.append(None)
                    continue
            elif type(rec) is Event:  # (made by the compiled step)
                events.append(rec)
                continue
            elif rec.start_ns < start and rec.kind == "span":
                self.count_drop("outside_session", "span")
                if in_place:
                    events.append(None)
                continue
            try:
                ev = self._compact_event(rec, info) if compact else self._to_event(rec, info)
            except Exception as exc:
                _safety.defer_error("writer.convert", exc)
                self.count_drop("internal_error", record_kind(rec))
                if in_place:
                    events.append(None)
                continue
            if ev.end_ns is not None:  # (a span written as begun is counted when it ends)
                recorded[ev.kind] = recorded.get(ev.kind, 0) + 1
            events.append(ev)
        return events

    def _thread_info(self, st: ThreadState) -> ThreadInfo:
        t = st.thread()
        if t is not None and t.name != st.info.name:
            st.info = replace(st.info, name=t.name)
        return self.written_thread(st.info)

    def written_thread(self, info: ThreadInfo) -> ThreadInfo:
        """``info`` as the trace names it: a thread name that holds a credential is scrubbed."""
        if self.limits.secret_keys is not None and may_hold_secret(info.name):  # (a thread named after one)
            clean = self._scrubbed_threads.get(info)
            if clean is None:
                if len(self._scrubbed_threads) >= 1024:
                    self._scrubbed_threads.clear()
                name = scrub_text(info.name, self.limits, self._writer_counts)
                clean = self._scrubbed_threads[info] = replace(info, name=name)
            return clean
        return info

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
                if isinstance(exc, OSError) and len(events) > WRITE_PIECE:
                    # A disk filling up: what still fits goes in, a piece at a time.
                    written = self._write_pieces(sink, info, events, gap)
                    if written:
                        gap = None
                self._sink_backoff = min(30.0, max(1.0, self._sink_backoff * 2))
                self._sink_retry_at = time.monotonic() + self._sink_backoff
                _safety.defer_error("sink.write", exc)
        if written < len(events):
            lost = [as_event(ev, info) for ev in events[written:]]
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
                # (Trace lines may have been turned on since _events made compact events of this batch.)
                lines.observe([as_event(ev, info) for ev in events], self.wall_offset_ns)
            except Exception as exc:
                _safety.defer_error("trace_lines", exc)

    def _write_pieces(self, sink: Sink, info: ThreadInfo, events: list[Event], gap: Loss | None) -> int:
        """After a batch failed to write: its events in pieces of WRITE_PIECE, until one fails; how many
        were written (a prefix of ``events``)."""
        written = 0
        for i in range(0, len(events), WRITE_PIECE):
            try:
                written += sink.write(info, events[i : i + WRITE_PIECE], gap if i == 0 else None)
            except Exception:
                break
        return written

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
        self._settle_stats()
        try:
            opened = [self._to_event(rec, rec.thread or ThreadInfo(os.getpid(), 0, "")) for rec in still_open]
            for span, info in open_spans:  # on a track of their own: what they enclose is unknown
                span.end_ns = None
                span.overlapping = True
                opened.append(self._to_event(span, info))
            sink.close(self.stats, opened)
            self.next_sequence = getattr(sink, "next_sequence", None)  # (close may begin sequences)
        except Exception as exc:
            _safety.defer_error("sink.close", exc)
        self._sink = None
        self._report_faults()

    def _report_faults(self) -> None:
        """A session that lost events to a failing sink or writer says so on stderr as it ends, with the
        counts and the errors behind them: the trace file (a full disk, a deleted file) may not hold its
        own stats, and logging may have no other handler than the one that failed."""
        lost = {r: n for r, n in self.stats.lost.items() if r in FAULT_REASONS}
        if not lost:
            return
        where = self.path if self.path is not None else "the recording"
        causes = []
        for key, (n, first) in _safety.cause_counts().items():
            n -= self._causes_at_start.get(key, (0, ""))[0]
            if n > 0:
                causes.append(first + (f" ({n:,} times)" if n > 1 else ""))
        text = ", ".join(f"{reason} {n:,}" for reason, n in lost.items())
        _safety.report(
            f"tracebridge: {where}: {sum(lost.values()):,} events lost ({text}), "
            f"{self.stats.total_recorded:,} recorded" + (f"; {'; '.join(causes)}" if causes else "")
        )

    def _settle_stats(self) -> None:
        """What the session's stats take from outside it (errors, sampling stages, session hooks), once:
        when it closes, or as stop() gives up waiting for the writer (a later session may share those)."""
        if self._stats_settled:
            return
        self._stats_settled = True
        self.stats.internal_errors += sum(_safety.error_counts().values()) - self._errors_at_start
        for hook in _hooks.session_closing:
            try:
                hook(self.stats)
            except Exception as exc:
                _safety.defer_error("session closing hook", exc)
        self._account_sampling()

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


def source_failed(where: str, kind: str, exc: Exception) -> None:
    """A source could not record an event because of an internal error: count the event dropped,
    report the error (raised in strict mode)."""
    session = RT.session
    if session is not None:
        session.count_drop("internal_error", kind)
    _safety.internal_error(where, exc)
