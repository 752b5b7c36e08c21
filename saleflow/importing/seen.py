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
pass holds the records of one chunk, whatever the size of the file.  A file
of at most `MEMORY_IDS` ids (most are) keeps its records in a dict and never
opens the database: that bounded dict costs a few MB and saves the import
about a tenth of its time.
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
# Records held in memory before they all go to the temporary database
# (a few MB; an import of fewer ids never opens one).
MEMORY_IDS = 20_000


@dataclass(slots=True)
class Known:
    """What a pass knows of one lead id (see `rows.Checker`)."""

    last_at: datetime | None = None  # with a time column: its last good row's time
    last_line: int = 0  # … and line
    changed_at: datetime | None = None  # stored before, no good row yet: its last change
    uncounted: bool = False  # stored before the import, no good row yet
    other_flow: str | None = None  # stored in another flow or version: which
    other_version: int = 0


_NOTHING = Known()


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
    each (`Known`); close it when the pass is over.  The first
    `MEMORY_IDS` records are held in a dict (most files are that small,
    and pay nothing more); past that they all go to the temporary
    database, and every chunk's go there too."""

    def __init__(self) -> None:
        self._memory: dict[str, Known] = {}
        self._db: sqlite3.Connection | None = None
        self.count = 0  # ids met

    def _open(self) -> sqlite3.Connection:
        with _temporary_file():
            db = sqlite3.connect("", isolation_level=None)
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            db.execute("PRAGMA cache_size=-4096")  # KiB: the page cache it holds at most
            db.execute(
                "CREATE TABLE seen (id TEXT PRIMARY KEY, last_at TEXT, last_line INTEGER NOT NULL DEFAULT 0, "
                "changed_at TEXT, uncounted INTEGER NOT NULL DEFAULT 0, other_flow TEXT, "
                "other_version INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID"
            )
        return db

    def known(self, ids: Iterable[str]) -> dict[str, Known]:
        """The records of those of `ids` met before (one query per batch)."""
        if self._db is None:
            memory = self._memory
            return {lead_id: memory[lead_id] for lead_id in ids if lead_id in memory}
        with _temporary_file():
            return self._known(ids)

    def remember(self, records: Mapping[str, Known], new: int) -> None:
        """Keep the records of a chunk (`new` of them met for the first time)."""
        self.count += new
        if self._db is None:
            self._memory.update(records)
            if len(self._memory) <= MEMORY_IDS:
                return
            self._db = self._open()
            records, self._memory = self._memory, {}
        with _temporary_file():
            self._remember(records)

    def _known(self, ids: Iterable[str]) -> dict[str, Known]:
        db = self._db
        assert db is not None
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Known] = {}
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start : start + _BATCH]
            marks = ",".join("?" * len(batch))
            rows = db.execute(
                "SELECT id, last_at, last_line, changed_at, uncounted, other_flow, other_version "
                f"FROM seen WHERE id IN ({marks})",
                batch,
            )
            for lead_id, last_at, last_line, changed_at, uncounted, other_flow, other_version in rows:
                found[lead_id] = Known(
                    _time(last_at), last_line, _time(changed_at), bool(uncounted), other_flow, other_version
                )
        return found

    def _remember(self, records: Mapping[str, Known]) -> None:
        db = self._db
        assert db is not None
        # Most ids of an import are new leads with nothing more to know
        # than that they were met: their rows are just the id.
        plain = [(lead_id,) for lead_id, k in records.items() if k == _NOTHING]
        full = [
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
            if k != _NOTHING
        ]
        db.execute("BEGIN")
        if plain:
            db.executemany("INSERT OR REPLACE INTO seen (id) VALUES (?)", plain)
        if full:
            db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?, ?, ?, ?, ?, ?)", full)
        db.execute("COMMIT")

    def close(self) -> None:
        self._memory = {}
        if self._db is not None:
            self._db.close()
