"""Creating trace files safely, and the overlap layout that both file formats share."""

from __future__ import annotations

import os
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
        self.path = os.fspath(path)
        self.file: BinaryIO | None = create_trace_file(path)
        self.size = 0  # bytes written by complete appends

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


class Lanes:
    """Places intervals on numbered lanes so that no two intervals on one lane cross.

    Two intervals may share a lane when they are disjoint or one lies strictly inside the other: a
    Perfetto track (or a Chrome JSON thread) then shows them as proper slices. Each lane remembers its
    last ``window`` intervals; an interval that starts before the end of a forgotten one is not put on
    that lane, so that memory stays bounded and the layout stays correct.
    """

    __slots__ = ("_lanes", "_window")

    def __init__(self, window: int = 64) -> None:
        self._window = window
        # Per lane: (recent intervals, the latest end among the intervals it forgot).
        self._lanes: list[tuple[deque[tuple[int, float]], float]] = []

    def place(self, start: int, end: float) -> int:
        for i, (recent, forgotten_end) in enumerate(self._lanes):
            if start <= forgotten_end:
                continue
            if all(_compatible(start, end, a, b) for a, b in recent):
                self._add(i, start, end)
                return i
        self._lanes.append((deque(), float("-inf")))
        self._add(len(self._lanes) - 1, start, end)
        return len(self._lanes) - 1

    def _add(self, i: int, start: int, end: float) -> None:
        recent, forgotten_end = self._lanes[i]
        if len(recent) >= self._window:
            _, b = recent.popleft()
            forgotten_end = max(forgotten_end, b)
            self._lanes[i] = (recent, forgotten_end)
        recent.append((start, end))


def _compatible(s: int, e: float, a: int, b: float) -> bool:
    return e < a or b < s or (a < s and e < b) or (s < a and b < e)
