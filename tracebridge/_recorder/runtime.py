"""What the hot path reads and writes: the runtime state (:data:`RT`), the clock, and each thread's
queue of records and stack of open spans.

A source appends a record to its thread's deque (``collections.deque.append`` is atomic, so no lock is
taken) after one length check that bounds memory; the writer thread (see ``_recorder``) drains them.

A record is an object with a ``kind`` (a span, an instant, ...), or, for the commonest record of all, a
span that carries nothing but its name, level and times in a session that needs no ids, the tuple
:data:`CompactSpan` ``(name, level, start_ns, end_ns)``: the span object itself is freed when it ends,
and a queued span costs 40% less memory. (A span's trace id therefore reaches a file when something asked
for it while the span ran; asked for later, by a task that outlives it, it is not written.)
"""

from __future__ import annotations

import contextvars
import os
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from .._accel import speedups
from .._config import Config
from .._model import ThreadInfo, trace_clock_ns

if TYPE_CHECKING:
    from .._hooks import SpanHook
    from ..sampling.pipeline import Pipeline
    from .session import Session

#: The clock every record is stamped with. ``perf_counter_ns`` is the cheapest monotonic clock with
#: nanosecond resolution on every platform (CLOCK_MONOTONIC on Linux); the writer adds ``clock_offset``
#: to put timestamps on the trace clock (CLOCK_BOOTTIME on Linux).
now_ns = time.perf_counter_ns


def measure_clock_offset() -> int:
    """``trace_clock_ns() - now_ns()``, from the closest pair of reads out of a few."""
    best: tuple[int, int] | None = None
    for _ in range(5):
        a = now_ns()
        t = trace_clock_ns()
        b = now_ns()
        if best is None or b - a < best[0]:
            best = (b - a, t - (a + b) // 2)
    assert best is not None
    return best[1]


class _Runtime:
    """What the hot path reads: one object, so that a check costs one global and one slot load."""

    __slots__ = (
        "block",
        "bridge",
        "buffer_cap",
        "buffer_soft",
        "compact",
        "config",
        "level",
        "pipeline",
        "session",
    )

    def __init__(self) -> None:
        #: The span hook (``configure(otel=...)``: the OpenTelemetry bridge) every span goes through.
        self.bridge: SpanHook | None = None
        self.level = 0  # the active session's level; 0 when no session is active
        self.session: Session | None = None
        self.pipeline: Pipeline | None = None  # the active session's sampling, if it has any
        self.config = Config()
        self.buffer_cap = self.config.thread_buffer  # copied here: one load less on the hot path
        #: Past this many queued records a thread's queue is crowded (see ThreadState.crowded).
        self.buffer_soft = soft_limit(self.buffer_cap)
        self.block = False  # configure(on_full="block"): a full queue waits for the writer
        #: Plain spans may be queued as CompactSpan tuples: the session writes a file, and nothing (trace
        #: lines, sampling, the OpenTelemetry bridge, in-memory events) needs their ids or parents.
        self.compact = False


def soft_limit(cap: int) -> int:
    """Where a queue of ``cap`` records becomes crowded: half full."""
    return max(1, cap // 2)


RT = _Runtime()

#: The innermost open span of the running task or thread (a :class:`tracebridge.Span`), or ``None``.
current: contextvars.ContextVar[Any] = contextvars.ContextVar("tracebridge_span", default=None)

#: A span queued as ``(name, level, start_ns, end_ns)`` (see the module's docstring).
CompactSpan = tuple[str, int, int, int]


def record_kind(rec: Any) -> str:
    """The event kind of a queued record."""
    return "span" if type(rec) is tuple else str(rec.kind)


#: A thread's queue of records: a deque, or compiled, a ``RecordQueue`` (the same methods), which holds
#: a CompactSpan as C values and hands the writer a run of records at once (``take(n)``).
new_queue: Any = deque if speedups is None else speedups.RecordQueue


class ThreadState:
    """A thread's queue of records for the writer and its stack of open spans."""

    __slots__ = (
        "__weakref__",
        "buf",
        "crowd",
        "dead",
        "deferred",
        "drop_first",
        "drop_last",
        "dropped",
        "idle_rounds",
        "info",
        "stack",
        "thread",
        "waiting",
    )

    def __init__(self) -> None:
        self.buf: deque[Any] = new_queue()
        self.stack: list[Any] = []  # open spans (tracebridge's, and OpenTelemetry's while they run)
        # Records that never made it into the queue, by (reason, kind), and when the first and the last
        # of them were dropped (now_ns; 0: none since the writer last took them, see take_drops()).
        self.dropped: dict[tuple[str, str], int] = {}
        self.drop_first = 0
        self.drop_last = 0
        t = threading.current_thread()
        self.thread = weakref.ref(t)
        self.info = ThreadInfo(os.getpid(), threading.get_native_id(), t.name)
        self.dead = False
        self.idle_rounds = 0
        #: Set once a source queued a Deferred record here: the writer then materializes them.
        self.deferred = False
        #: The thread waits for room in this queue (on_full="block"): a record made meanwhile on it (a
        #: signal handler) is dropped, not waited for.
        self.waiting = False
        self.crowd = 0  # records queued while the queue was crowded

    def drop(self, kind: str, reason: str = "queue_full") -> None:
        # The slow path: a lock, because a span that ends on another thread than the one it began on
        # counts its drop here too.
        t = now_ns()
        key = (reason, kind)
        with _drop_lock:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            if not self.drop_first:
                self.drop_first = t
            self.drop_last = t

    def take_drops(self) -> tuple[dict[tuple[str, str], int], int, int]:
        """The drops since the last call: counts by (reason, kind), first and last time (now_ns)."""
        with _drop_lock:
            dropped, first, last = self.dropped, self.drop_first, self.drop_last
            if dropped:
                self.dropped = {}
                self.drop_first = self.drop_last = 0
        return dropped, first, last

    def push(self, rec: Any) -> None:
        """Queue a record; when the queue is crowded or full, see :meth:`crowded`."""
        buf = self.buf
        if len(buf) < RT.buffer_soft:
            buf.append(rec)
        else:
            self.crowded(rec)

    def crowded(self, rec: Any) -> None:
        """The queue is more than half full (the writer falls behind: a tight loop). Queue ``rec``, or when
        the queue is full, do what the session's policy says (:meth:`full`); and every 64 records let the
        writer run: this thread wakes it and yields the interpreter lock (``time.sleep(0)``), which the
        writer takes as it waits for it. Without this, a loop that records as fast as the writer writes
        shares the lock with it about evenly, and the queue overflows however cheap each record is; and a
        writer that sleeps until its next round finds it overflowed."""
        buf = self.buf
        if len(buf) < RT.buffer_cap:
            buf.append(rec)
        else:
            self.full(rec)
        self.crowding()

    def crowding(self) -> None:
        """Count a record made while the queue is crowded; every 64th lets the writer run."""
        self.crowd = crowd = self.crowd + 1
        if not crowd & 63 and not self.waiting and RT.session is not None:
            _yield()

    def full(self, rec: Any) -> None:
        """The queue is full. ``on_full="drop"``: count ``rec`` dropped (``queue_full``). ``"block"``:
        wait for the writer to make room, then queue it; a writer that is dead or does not make room
        within the session's ``timeout`` makes it a drop (``writer_stalled``)."""
        session = RT.session
        if RT.block and session is not None:
            try:
                reason = session.queue_when_room(self, rec)
            except BaseException:  # KeyboardInterrupt while waiting: the record is counted, then it goes on
                if not any(r is rec for r in self.buf):  # (unless it was queued just before)
                    self.drop(record_kind(rec))
                raise
            if reason is not None:
                self.drop(record_kind(rec), reason)
        else:
            self.drop(record_kind(rec))

    def push_required(self, rec: Any) -> None:
        """Queue a record whatever the queue holds: the end of a span whose beginning is in the trace
        already (dropping it would leave the slice open, swallowing the thread's later slices). Such
        records are bounded by the spans running at once."""
        self.buf.append(rec)


def _yield() -> None:
    """Let the writer run: wake it (it may sleep until its next round, flush_interval away, while this
    thread fills its queue) and give up the interpreter lock, which it waits for as it wakes."""
    session = RT.session
    if session is not None:
        session.nudge()
    time.sleep(0)


# Re-entrant: a signal handler may end a span (and count its drop) while its thread counts one.
_drop_lock = threading.RLock()


class _Tls(threading.local):
    state: ThreadState
    watch: _DeathWatch


thread_local = _Tls()
_threads_lock = threading.Lock()
_threads: list[ThreadState] = []


class _DeathWatch:
    """Lives only in the thread-local storage: it is freed when its thread ends, marking the state."""

    __slots__ = ("state",)

    def __init__(self, state: ThreadState) -> None:
        self.state = state

    def __del__(self) -> None:
        self.state.dead = True


def thread_state() -> ThreadState:
    try:
        return thread_local.state
    except AttributeError:
        return _attach_thread()


def _attach_thread() -> ThreadState:
    st = ThreadState()
    thread_local.state = st
    thread_local.watch = _DeathWatch(st)
    with _threads_lock:
        _threads.append(st)
    return st


def all_threads() -> list[ThreadState]:
    with _threads_lock:
        return list(_threads)


def revive(st: ThreadState) -> None:
    """Make sure the writer drains ``st`` (its thread has ended, and something still queues records
    that belong on its sequence)."""
    with _threads_lock:
        st.idle_rounds = 0
        if st not in _threads:
            _threads.append(st)


def forget_dead_threads() -> None:
    """Drop the states of threads that ended, once their queues have stayed empty for two rounds (a span
    that began on a thread may end on another just as the first one ends)."""
    with _threads_lock:
        keep = []
        for st in _threads:
            if st.dead and not st.buf:
                st.idle_rounds += 1
                if st.idle_rounds > 2:
                    continue
            keep.append(st)
        _threads[:] = keep


def threads_after_fork() -> int:
    """In a forked child: a fresh lock (another thread of the parent may have held it), only the calling
    thread's state kept (emptied). Returns the records the child inherited and dropped."""
    global _threads_lock, _drop_lock
    _threads_lock = threading.Lock()
    _drop_lock = threading.RLock()
    me = threading.get_native_id()
    inherited = 0
    with _threads_lock:
        survivors = []
        for st in _threads:
            if st.info.tid == me or (st.thread() is threading.current_thread()):
                st.info = ThreadInfo(os.getpid(), threading.get_native_id(), st.info.name)
                survivors.append(st)
            else:
                inherited += len(st.buf)
        _threads[:] = survivors
    for st in survivors:
        inherited += len(st.buf)
        st.buf.clear()
        st.take_drops()
    return inherited
