"""Sorting more records than memory should hold: sorted runs written to temporary files, merged.

The reader sorts a trace's events by timestamp before it matches slices, as trace_processor does. A
trace of a billion events does not fit in memory, so when the reader is asked to stream (``summary``,
``validate``), it hands its records here a run at a time: each run is sorted and written to a temporary
file (in ``TMPDIR``) in pickled chunks, compressed (records repeat their names: a chunk compresses about
tenfold), runs are merged in tiers (``FAN_IN`` runs of one tier make one of the next, so
that every record is rewritten only a logarithmic number of times), and :meth:`ExternalSort.merged`
gives every record in order, reading one chunk per run at a time. Memory: one run while it is filled,
plus one chunk of each run while merging.

Records are tuples whose first fields make them unique (the reader's are ``(ts, order, ...)`` with a
distinct ``order``), so comparing two never reaches a field that does not compare.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import pickle
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

#: Records written per pickled chunk (what merging holds of each run).
CHUNK = 2048
#: Runs of one tier merged into one run of the next.
FAN_IN = 16


class ExternalSort:
    """Sorted runs of records on disk, in a temporary folder that :meth:`close` removes."""

    def __init__(self) -> None:
        self._folder: str | None = None
        self._tiers: list[list[str]] = []
        self._files = 0
        self.records = 0  # records written to disk (the first time)

    def add_run(self, records: list[Any]) -> None:
        """Sort ``records`` (in place) and write them as a run; the caller may then reuse the list."""
        records.sort()
        self.records += len(records)
        path = self._write(records)
        records.clear()
        self._add(0, path)

    def merged(self, tail: list[Any]) -> Iterator[Any]:
        """Every record written, and those of ``tail`` (sorted here), in order; the run files are removed
        as they are read to their end."""
        tail.sort()
        runs = [path for tier in self._tiers for path in tier]
        self._tiers = []
        return heapq.merge(*(_read(path) for path in runs), _drain(tail))

    def close(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
        self._tiers = []

    def __enter__(self) -> ExternalSort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add(self, tier: int, path: str) -> None:
        while len(self._tiers) <= tier:
            self._tiers.append([])
        runs = self._tiers[tier]
        runs.append(path)
        if len(runs) >= FAN_IN:
            self._tiers[tier] = []
            self._add(tier + 1, self._write(heapq.merge(*(_read(p) for p in runs))))

    def _write(self, records: Iterable[Any]) -> str:
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="tracebridge-sort-")
        path = os.path.join(self._folder, f"run{self._files}")
        self._files += 1
        with open(path, "wb") as f:
            chunk: list[Any] = []
            for record in records:
                chunk.append(record)
                if len(chunk) >= CHUNK:
                    _dump(chunk, f)
                    chunk = []
            if chunk:
                _dump(chunk, f)
        return path


_LENGTH = struct.Struct("<Q")


def _dump(chunk: list[Any], f: Any) -> None:
    data = zlib.compress(pickle.dumps(chunk, pickle.HIGHEST_PROTOCOL), 1)
    f.write(_LENGTH.pack(len(data)))
    f.write(data)


def _read(path: str) -> Iterator[Any]:
    """The records of one run file (ours: written by :meth:`ExternalSort._write` in this process), a
    chunk at a time; the file is removed once read."""
    try:
        with open(path, "rb") as f:
            while True:
                head = f.read(_LENGTH.size)
                if not head:
                    break
                (length,) = _LENGTH.unpack(head)
                yield from pickle.loads(zlib.decompress(f.read(length)))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _drain(records: list[Any]) -> Iterator[Any]:
    """The records of a sorted list in order, each let go of as it is given."""
    records.reverse()
    pop = records.pop
    while records:
        yield pop()
