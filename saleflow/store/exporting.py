"""The reads behind `saleflow export` (SPEC §6, "Export for BI").

Layer 3, part of the store; mixed into `SqlStore`.  Every read pages by key
(keyset pagination), one chunk per query in autocommit, as `iter_journal`
and `iter_leads` do: no snapshot is held for the length of an export, a
writer is never blocked, and memory stays flat however large the database.

- `export_journal`: entries in `seq` order, from after a position up to a
  `high` one (the caller passes `high_water()`, so the export is a prefix of
  the journal that no later writer can add to), by flow and effective time.
- `export_moves`: each lead's ``created`` and ``moved`` entries, in
  (lead, lead_seq) order, up to the same `high` position: what the stages
  export folds, a lead at a time.
- `export_leads`: the stored leads in id order, by flow and creation time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Integer, bindparam, or_, select, tuple_
from sqlalchemy.engine import Connection, Engine

from ..journal import JournalEntry
from ..records import Lead
from .schema import journal, leads
from .statements import JOURNAL_COLUMNS, LEAD_COLUMNS, Compiled, read_leads

J, L = journal.c, leads.c
T = TypeVar("T")


class Move(NamedTuple):
    """A ``created`` or ``moved`` entry as the stages export reads it."""

    lead_id: str
    lead_seq: int
    kind: str | None
    stage: str
    cycle: int
    at: datetime
    flow: str
    version: int


_MOVE_COLUMNS = (J.lead_id, J.lead_seq, J.kind, J.stage, J.cycle, J.at, J.flow, J.version)


class ExportQueries:
    """The export reads, mixed into `SqlStore` (which provides `_query` and
    `engine`)."""

    @property
    def engine(self) -> Engine:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    def _query(self, run: Callable[[Connection], T]) -> T:  # pragma: no cover - SqlStore's
        raise NotImplementedError

    def _export_statement(self, name: str, build: Callable[[], Any]) -> Compiled:
        """A statement compiled once per store and shape."""
        cache: dict[str, Compiled] = self.__dict__.setdefault("_export_statements", {})
        found = cache.get(name)
        if found is None:
            found = cache[name] = Compiled(build(), self.engine.dialect)
        return found

    def _rows(self, stmt: Compiled, params: dict[str, Any]) -> list[list[Any]]:
        def run(conn: Connection) -> list[list[Any]]:
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                return stmt.all(cur, params)
            finally:
                cur.close()

        return self._query(run)

    def export_journal(
        self,
        high: int,
        *,
        flow: str | None = None,
        since: datetime | None = None,
        end: datetime | None = None,
        chunk: int = 1000,
    ) -> Iterator[list[JournalEntry]]:
        """Journal entries with ``seq <= high`` in `seq` order, a chunk at a
        time; only `flow`'s, and only those whose effective time `at` is at
        or after `since` and before `end` (exclusive) when given."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        key = f"journal:{flow is not None}:{since is not None}:{end is not None}"

        def build() -> Any:
            stmt = select(*JOURNAL_COLUMNS).where(
                J.seq > bindparam("after", type_=J.seq.type), J.seq <= bindparam("high", type_=J.seq.type)
            )
            if flow is not None:
                stmt = stmt.where(J.flow == bindparam("flow", type_=J.flow.type))
            if since is not None:
                stmt = stmt.where(J.at >= bindparam("since", type_=J.at.type))
            if end is not None:
                stmt = stmt.where(J.at < bindparam("end", type_=J.at.type))
            return stmt.order_by(J.seq).limit(bindparam("chunk", type_=Integer))

        stmt = self._export_statement(key, build)
        params: dict[str, Any] = {"after": 0, "high": high, "chunk": chunk}
        params.update({k: v for k, v in (("flow", flow), ("since", since), ("end", end)) if v is not None})
        while True:
            page = [JournalEntry(*row) for row in self._rows(stmt, params)]
            if page:
                yield page
            if len(page) < chunk:
                return
            params["after"] = page[-1].seq

    def export_moves(self, high: int, *, flow: str | None = None, chunk: int = 1000) -> Iterator[list[Move]]:
        """Every ``created`` and ``moved`` entry with ``seq <= high``, in
        (lead, lead_seq) order, a chunk at a time (a lead's entries may
        span two chunks); only `flow`'s when given."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")

        def build(first: bool) -> Any:
            stmt = select(*_MOVE_COLUMNS).where(
                or_(J.entry == "created", J.entry == "moved"), J.seq <= bindparam("high", type_=J.seq.type)
            )
            if not first:
                after = tuple_(
                    bindparam("after_lead", type_=J.lead_id.type), bindparam("after_seq", type_=Integer)
                )
                stmt = stmt.where(tuple_(J.lead_id, J.lead_seq) > after)
            if flow is not None:
                stmt = stmt.where(J.flow == bindparam("flow", type_=J.flow.type))
            return stmt.order_by(J.lead_id, J.lead_seq).limit(bindparam("chunk", type_=Integer))

        params: dict[str, Any] = {"high": high, "chunk": chunk}
        if flow is not None:
            params["flow"] = flow
        first = True
        while True:
            stmt = self._export_statement(f"moves:{first}:{flow is not None}", partial(build, first))
            page = [Move(*row) for row in self._rows(stmt, params)]
            if page:
                yield page
            if len(page) < chunk:
                return
            first = False
            params["after_lead"], params["after_seq"] = page[-1].lead_id, page[-1].lead_seq

    def export_leads(
        self,
        *,
        flow: str | None = None,
        since: datetime | None = None,
        end: datetime | None = None,
        chunk: int = 1000,
    ) -> Iterator[list[Lead]]:
        """Stored leads in id order, a chunk at a time; only `flow`'s, and
        only those created at or after `since` and before `end` when given."""
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        stmt = select(*LEAD_COLUMNS).where(L.id > bindparam("after", type_=L.id.type))
        if flow is not None:
            stmt = stmt.where(L.flow == bindparam("flow", type_=L.flow.type))
        if since is not None:
            stmt = stmt.where(L.created_at >= bindparam("since", type_=L.created_at.type))
        if end is not None:
            stmt = stmt.where(L.created_at < bindparam("end", type_=L.created_at.type))
        stmt = stmt.order_by(L.id).limit(bindparam("chunk", type_=Integer))
        params: dict[str, Any] = {"after": "", "chunk": chunk}
        params.update({k: v for k, v in (("flow", flow), ("since", since), ("end", end)) if v is not None})
        while True:
            page = self._query(lambda conn: read_leads(conn, stmt, params))
            if page:
                yield page
            if len(page) < chunk:
                return
            params["after"] = page[-1].id


__all__ = ["ExportQueries", "Move"]
