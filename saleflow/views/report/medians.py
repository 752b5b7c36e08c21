"""Exact medians in bounded memory.

A report needs the median time in stage over every pass through a stage, and
there can be millions.  `Medians` keeps at most `limit` values in memory (8
bytes each); past that it sorts what it holds, per key, and writes each as a
run to one temporary file.  A median is then found by merging a key's runs in
order up to the middle rank: a small external sort, so memory stays flat
however many leads there are, and the result is exact (the mean of the two
middle values for an even count, as `statistics.median`).
"""

from __future__ import annotations

import heapq
import tempfile
from array import array
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterator
from typing import IO

_READ = 8192  # values per read from a run


class Medians:
    """Values per key; `median(key)` when they are all in."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self._held: dict[Hashable, array[float]] = defaultdict(lambda: array("d"))
        self._size = 0
        self._runs: dict[Hashable, list[tuple[int, int]]] = defaultdict(list)  # (offset, count)
        self._file: IO[bytes] | None = None
        self.counts: Counter[Hashable] = Counter()

    def add(self, key: Hashable, value: float) -> None:
        self._held[key].append(value)
        self.counts[key] += 1
        self._size += 1
        if self._size >= self.limit:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        for key, values in self._held.items():
            run = array("d", sorted(values))
            offset = self._file.seek(0, 2)
            run.tofile(self._file)
            self._runs[key].append((offset, len(run)))
        self._held.clear()
        self._size = 0

    def _run(self, offset: int, count: int) -> Iterator[float]:
        assert self._file is not None
        while count:
            chunk = array("d")
            self._file.seek(offset)
            take = min(count, _READ)
            chunk.fromfile(self._file, take)
            yield from chunk
            offset += take * chunk.itemsize
            count -= take

    def median(self, key: Hashable) -> float | None:
        count = self.counts.get(key, 0)
        if not count:
            return None
        low, high = (count - 1) // 2, count // 2
        held = sorted(self._held.get(key, ()))
        runs = self._runs.get(key, [])
        if not runs:
            return (held[low] + held[high]) / 2
        first = 0.0
        merged = heapq.merge(held, *(self._run(offset, n) for offset, n in runs))
        for rank, value in enumerate(merged):
            if rank == low:
                first = value
            if rank == high:
                return (first + value) / 2
        raise AssertionError("fewer values than counted")  # pragma: no cover

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Medians:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
