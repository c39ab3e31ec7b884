"""Creating trace files safely, and the overlap layout that both file formats share."""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from pathlib import Path
from typing import BinaryIO


def create_trace_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Create ``path`` as a new file for writing (mode 0666 minus the umask).

    An existing regular file is replaced; a symlink is refused rather than followed (a trace must never
    be written through a link into some other file). Errors are raised as ``OSError`` with the path.
    """
    p = Path(path)
    if p.is_symlink():
        raise OSError(f"refusing to write a trace through the symlink {p}")
    if p.is_dir():
        raise IsADirectoryError(f"trace path {p} is a directory")
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    if p.exists() and not p.is_file():
        # A pipe or a device (/dev/stdout, a FIFO a reader waits on): write to it as it is.
        fd = os.open(p, os.O_WRONLY | nofollow)
        return os.fdopen(fd, "wb", buffering=0)
    if p.exists():
        p.unlink()
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | nofollow, 0o666)
    return os.fdopen(fd, "wb", buffering=0)


class AppendOnlyFile:
    """A trace file that grows by whole writes: ``append`` writes all of its data or, when it cannot
    (a disk filling up), cuts the file back to where it was and raises. Readers therefore never see
    half a record followed by more records. A file that cannot be cut back (a pipe) is closed, and
    later appends raise."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(path)  # (a chdir while recording must not look like a deleted file)
        self.file: BinaryIO | None = None
        self.size = 0  # bytes written by complete appends
        #: How many times the file was found deleted or replaced, and made anew (see :meth:`renew`).
        self.renewed = 0
        self._identity: tuple[int, int] | None = None
        self._open()

    def _open(self) -> None:
        self.file = create_trace_file(self.path)
        self.size = 0
        st = os.fstat(self.file.fileno())
        self._identity = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None

    def replaced(self) -> bool:
        """Whether the file at ``path`` is no longer the one being written (deleted, or renamed away and
        another put in its place, as log rotation does). Pipes and devices are never replaced."""
        if self.file is None or self._identity is None:
            return False
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return (st.st_dev, st.st_ino) != self._identity

    def renew(self) -> bool:
        """Make the file anew at ``path`` when it was deleted or replaced (the caller then writes a trace
        from its beginning); True if it did."""
        if not self.replaced():
            return False
        old, self.file = self.file, None
        if old is not None:
            with contextlib.suppress(OSError):
                old.close()
        self._open()
        self.renewed += 1
        return True

    @property
    def closed(self) -> bool:
        return self.file is None

    def append(self, data: bytes) -> None:
        f = self.file
        if f is None:
            raise ValueError(f"trace file {self.path} is closed")
        view = memoryview(data)
        try:
            while view:
                n = f.write(view)  # an unbuffered file may take only part of it
                if not n:
                    raise OSError(f"could not write {len(view)} more bytes to {self.path}")
                view = view[n:]
        except BaseException:
            try:
                f.truncate(self.size)
                f.seek(self.size)
            except OSError:
                self.close()
            raise
        self.size += len(data)

    def close(self) -> None:
        f, self.file = self.file, None
        if f is not None:
            f.close()


def renewed(path: str, times: int) -> None:
    """Say on stderr (the first time) that a trace file was deleted or replaced and made anew."""
    if times == 1:
        from .. import _safety

        _safety.report(
            f"tracebridge: {path} was deleted or replaced while recording; the recording goes on in a new "
            "file there, from this point (what was written before is not in it)"
        )


class Lanes:
    """Places intervals on numbered lanes so that no two intervals on one lane cross.

    Two intervals may share a lane when they are disjoint or one lies strictly inside the other: a
    Perfetto track (or a Chrome JSON thread) then shows them as proper slices. Each lane remembers its
    last ``window`` intervals; an interval that starts before the end of a forgotten one is not put on
    that lane, so that memory stays bounded and the layout stays correct.
    """

    __slots__ = ("_ends", "_lanes", "_window")

    def __init__(self, window: int = 64) -> None:
        self._window = window
        # Per lane: (recent intervals, the latest end among the intervals it forgot).
        self._lanes: list[tuple[deque[tuple[int, float]], float]] = []
        # Per lane: the latest end of all its intervals. An interval that starts after it crosses none of
        # them (the common case, intervals one after another): no need to look at each.
        self._ends: list[float] = []

    def place(self, start: int, end: float) -> int:
        for i, (recent, forgotten_end) in enumerate(self._lanes):
            if start <= forgotten_end:
                continue
            if start > self._ends[i] or all(_compatible(start, end, a, b) for a, b in recent):
                self._add(i, start, end)
                return i
        self._lanes.append((deque(), float("-inf")))
        self._ends.append(float("-inf"))
        self._add(len(self._lanes) - 1, start, end)
        return len(self._lanes) - 1

    def _add(self, i: int, start: int, end: float) -> None:
        recent, forgotten_end = self._lanes[i]
        if len(recent) >= self._window:
            _, b = recent.popleft()
            forgotten_end = max(forgotten_end, b)
            self._lanes[i] = (recent, forgotten_end)
        recent.append((start, end))
        self._ends[i] = max(self._ends[i], end)


def _compatible(s: int, e: float, a: int, b: float) -> bool:
    return e < a or b < s or (a < s and e < b) or (s < a and b < e)
