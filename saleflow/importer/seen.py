"""What an import remembers per lead id, on disk rather than in memory.

A pass of an import has to know, for every lead id it meets, whether it met
it before, and for some leads a little more (the time and line of its last
good row, when a time column gives rows times; whether it was stored before
the import and had no good row yet; the flow and version of a stored lead of
another flow or version).  Held in dicts, that grows with the number of ids:
60, 109 and 274 MB for 10,000, 100,000 and 1,000,000 rows (issue 12).

`Seen` keeps it in a private temporary SQLite database (``sqlite3.connect("")``:
SQLite holds it in a small page cache and spills the rest to a temporary
file it deletes when closed), read and written a chunk at a time: the ids of
a chunk are looked up with one query, their records come back as `Known`,
and what the chunk changed is written back with one ``executemany``.  So a
pass holds the records of one chunk, whatever the size of the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from ..errors import BadInput

# Ids per query (SQLite's default limit on bound values is 32,766).
_BATCH = 5000


@dataclass(slots=True)
class Known:
    """What a pass knows of one lead id (see `rows.Checker`)."""

    last_at: datetime | None = None  # with a time column: its last good row's time
    last_line: int = 0  # … and line
    changed_at: datetime | None = None  # stored before, no good row yet: its last change
    uncounted: bool = False  # stored before the import, no good row yet
    other_flow: str | None = None  # stored in another flow or version: which
    other_version: int = 0


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@contextmanager
def _temporary_file() -> Iterator[None]:
    """SQLite's failures (a full or unwritable temporary folder) as one sentence."""
    try:
        yield
    except sqlite3.Error as err:
        raise BadInput(
            f"cannot keep the import's lead ids in a temporary file ({err}); nothing was imported "
            "(point TMPDIR at a writable folder with room)"
        ) from None


class Seen:
    """The lead ids one pass of an import has met, with what it knows of
    each (`Known`); close it when the pass is over."""

    def __init__(self) -> None:
        with _temporary_file():
            self._db = sqlite3.connect("", isolation_level=None)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("PRAGMA cache_size=-4096")  # KiB: the page cache it holds at most
            self._db.execute(
                "CREATE TABLE seen (id TEXT PRIMARY KEY, last_at TEXT, last_line INTEGER, changed_at TEXT, "
                "uncounted INTEGER, other_flow TEXT, other_version INTEGER) WITHOUT ROWID"
            )
        self.count = 0  # ids met

    def known(self, ids: Iterable[str]) -> dict[str, Known]:
        """The records of those of `ids` met before (one query per batch)."""
        with _temporary_file():
            return self._known(ids)

    def _known(self, ids: Iterable[str]) -> dict[str, Known]:
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Known] = {}
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                "SELECT id, last_at, last_line, changed_at, uncounted, other_flow, other_version "
                f"FROM seen WHERE id IN ({marks})",
                batch,
            )
            for lead_id, last_at, last_line, changed_at, uncounted, other_flow, other_version in rows:
                found[lead_id] = Known(
                    _time(last_at), last_line, _time(changed_at), bool(uncounted), other_flow, other_version
                )
        return found

    def remember(self, records: Mapping[str, Known], new: int) -> None:
        """Write the records of a chunk (`new` of them met for the first time)."""
        with _temporary_file():
            self._remember(records)
        self.count += new

    def _remember(self, records: Mapping[str, Known]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    lead_id,
                    _text(k.last_at),
                    k.last_line,
                    _text(k.changed_at),
                    int(k.uncounted),
                    k.other_flow,
                    k.other_version,
                )
                for lead_id, k in records.items()
            ],
        )
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()
