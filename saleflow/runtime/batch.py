"""Batch work: rows in chunks, and write-behind where the store offers it.

Layer 4, below the engine and the importer, which both work in batches
(`advance --all`, `tick`, `import`, `migrate`): a chunk of leads per
transaction, read at once and written at the end of the chunk.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from ..records import Batching, Transaction

T = TypeVar("T")


@contextmanager
def write_behind(tx: Transaction, ids: Iterable[str]) -> Iterator[Transaction]:
    """`tx` for batch work: where the store offers it (`Batching`), a
    buffered view that reads (and on PostgreSQL locks) the leads `ids`,
    their journals' newest entries and their events in a few statements and
    writes everything at the end of the block; otherwise `tx` itself.
    Per-lead round trips dominate batch work on a server."""
    if not isinstance(tx, Batching):
        yield tx
        return
    buffered = tx.buffered()
    buffered.prefetch(ids)
    yield buffered
    buffered.flush()


def chunked(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    """`rows` in lists of `size`: batch work commits one transaction per list."""
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = ["chunked", "write_behind"]
