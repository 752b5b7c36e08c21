"""Every fixed statement of the store, written in SQLAlchemy Core and
compiled once per dialect.

The hot path (the statements of one engine operation) runs each `Compiled`
statement straight on the DBAPI cursor of the SQLAlchemy-managed connection,
with exactly the bind and result processing SQLAlchemy itself would apply
(the types' own processors, looked up once).  That skips SQLAlchemy's
per-execution bookkeeping (cache-key lookup, parameter construction, result
metadata), which otherwise costs several times what SQLite spends on the
statement; the SQL, the types and the transaction stay SQLAlchemy's.
Statements whose shape varies (``IN`` lists, optional filters) go through
`Connection.execute` as usual.

Over 500 lines on purpose: one statement per line of the store's work,
compiled together so that every one is built once per dialect in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from functools import cached_property
from operator import attrgetter
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement, Select

from ..journal import JournalEntry
from ..records import Lead
from .schema import JOURNAL_SEQUENCE, Corrupt, events, flows, journal, leads, sla_breaches, waiting

L, E, J, W, F = leads.c, events.c, journal.c, waiting.c, flows.c

# Column orders match the dataclasses, so a row becomes `Lead(*row)` etc.
LEAD_COLUMNS: tuple[Column[Any], ...] = (
    *(L.id, L.flow, L.version, L.stage, L.fields, L.cycle),
    *(L.entered_at, L.created_at, L.updated_at, L.score, L.revision, L.due_at),
)
EVENT_COLUMNS: tuple[Column[Any], ...] = (E.name, E.at, E.channel, E.content, E.count, E.cycle)
JOURNAL_COLUMNS: tuple[Column[Any], ...] = tuple(journal.c)
LEAD_UPDATED = (
    "flow",
    "version",
    "stage",
    "fields",
    "cycle",
    "score",
    "entered_at",
    "created_at",
    "updated_at",
    "due_at",
)

_Processor = Callable[[Any], Any] | None
_REQUIRED = object()


class Compiled:
    """One Core statement compiled for one dialect, executed on a DBAPI cursor."""

    __slots__ = ("_dialect", "_key", "_loaders", "_names", "_slots", "_types", "sql")

    def __init__(
        self, stmt: ClauseElement, dialect: Dialect, column_keys: Sequence[str] | None = None
    ) -> None:
        compiled = stmt.compile(dialect=dialect, column_keys=list(column_keys) if column_keys else None)
        if compiled.escaped_bind_names:  # type: ignore[attr-defined]  # never: our names are plain
            raise ValueError(f"bind names need escaping in {compiled.string!r}")
        self.sql: str = compiled.string
        # name -> (key the caller passes, default value, bind processor)
        binds: dict[str, tuple[str, Any, _Processor]] = {}
        for param, name in compiled.bind_names.items():  # type: ignore[attr-defined]
            default = _REQUIRED if param.required else param.effective_value
            binds[name] = (param.key, default, param.type.dialect_impl(dialect).bind_processor(dialect))
        # Positional paramstyles (SQLite) take a sequence in `positiontup`
        # order; named ones (psycopg) a dict.
        self._names: tuple[str, ...] | None = None
        if compiled.positional:  # type: ignore[attr-defined]
            self._slots = tuple(binds[name] for name in compiled.positiontup)  # type: ignore[attr-defined]
        else:
            self._names = tuple(binds)
            self._slots = tuple(binds.values())
        self._dialect = dialect
        self._types = [c.type for c in stmt.selected_columns] if isinstance(stmt, Select) else []
        # Where a row says which lead it belongs to, for naming a corrupted one.
        names = [c.key for c in stmt.selected_columns] if isinstance(stmt, Select) else []
        self._key = next((names.index(k) for k in ("lead_id", "id") if k in names), None)
        self._loaders: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None

    def binder(
        self, getter: Callable[[Any], Sequence[Any]], keys: Sequence[str], ready: Collection[str] = ()
    ) -> Callable[[Any], Any]:
        """`params` for a record whose values `getter` returns as a tuple in
        `keys` order (an `operator.attrgetter`): no dict is built per row,
        which is most of the cost of binding a batch.  Every bound name must
        be among `keys`; those in `ready` come as the driver takes them (no
        bind processing)."""
        where = {key: index for index, key in enumerate(keys)}
        order = tuple(where[key] for key, _default, _proc in self._slots)
        processed = tuple(
            (slot, proc)
            for slot, (key, _, proc) in enumerate(self._slots)
            if proc is not None and key not in ready
        )
        names = self._names
        if names is None and order == tuple(range(len(keys))):  # already in bind order
            pick: Callable[[Sequence[Any]], list[Any]] = list
        else:
            pick = lambda values: [values[index] for index in order]  # noqa: E731

        def bind(record: Any) -> Any:
            out = pick(getter(record))
            for slot, proc in processed:
                out[slot] = proc(out[slot])
            return out if names is None else dict(zip(names, out, strict=True))

        return bind

    def params(self, given: Mapping[str, Any]) -> Any:
        """The DBAPI parameters (list or dict) for the caller's named values."""
        values: list[Any] = []
        append = values.append
        for key, default, proc in self._slots:
            value = given[key] if default is _REQUIRED else given.get(key, default)
            append(value if proc is None else proc(value))
        return values if self._names is None else dict(zip(self._names, values, strict=True))

    def execute(self, cursor: Any, given: Mapping[str, Any]) -> Any:
        cursor.execute(self.sql, self.params(given))
        return cursor

    def _result_processors(self, cursor: Any) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        # As SQLAlchemy does: some drivers' processors depend on the type code
        # the cursor reports (PostgreSQL numerics), so look them up on first use.
        loaders = []
        for index, (type_, described) in enumerate(zip(self._types, cursor.description, strict=True)):
            proc = type_.dialect_impl(self._dialect).result_processor(self._dialect, described[1])
            if proc is not None:
                loaders.append((index, proc))
        self._loaders = tuple(loaders)
        return self._loaders

    def load(self, cursor: Any, row: Sequence[Any]) -> list[Any]:
        """A fetched row with SQLAlchemy's result processing applied."""
        loaders = self._loaders
        if loaders is None:
            loaders = self._result_processors(cursor)
        values = list(row)
        try:
            for index, proc in loaders:
                values[index] = proc(values[index])
        except Corrupt as err:
            raise err if self._key is None else err.naming(str(row[self._key])) from None
        return values

    def first(self, cursor: Any, given: Mapping[str, Any]) -> list[Any] | None:
        row = self.execute(cursor, given).fetchone()
        return None if row is None else self.load(cursor, row)

    def all(self, cursor: Any, given: Mapping[str, Any]) -> list[list[Any]]:
        rows = self.execute(cursor, given).fetchall()
        return [self.load(cursor, row) for row in rows]


class Statements:
    """The statements of one dialect, each compiled on first use (a CLI call
    needs only a few of them)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.pg = dialect.name == "postgresql"
        self.error: type[Exception] = dialect.loaded_dbapi.Error
        self._lead_pages: dict[tuple[bool, bool, bool], Select[Any]] = {}
        self._due_pages: dict[tuple[str, bool, bool], Select[Any]] = {}
        self._claims: dict[bool, Compiled] = {}

    def _compile(self, stmt: ClauseElement, table: Table | None = None) -> Compiled:
        keys = None
        if table is not None:  # an INSERT binds every column but a generated id
            keys = [c.key for c in table.c if not (c.primary_key and c.autoincrement is True)]
        return Compiled(stmt, self.dialect, keys)

    def _upsert(self, table: Table) -> Any:
        if self.pg:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    # -- leads --------------------------------------------------------------

    @cached_property
    def get_lead(self) -> Compiled:
        return self._compile(select(*LEAD_COLUMNS).where(L.id == bindparam("id")))

    @cached_property
    def lock_lead(self) -> Compiled:
        stmt = select(*LEAD_COLUMNS).where(L.id == bindparam("id"))
        return self._compile(stmt.with_for_update() if self.pg else stmt)

    @cached_property
    def insert_lead(self) -> Compiled:
        return self._compile(leads.insert(), leads)

    @cached_property
    def update_lead(self) -> Compiled:
        return self._compile(
            leads.update()
            .where(L.id == bindparam("b_id"), L.revision == bindparam("b_revision"))
            .values({name: bindparam(f"v_{name}", type_=L[name].type) for name in LEAD_UPDATED})
            .values(revision=L.revision + 1)
        )

    @cached_property
    def count_in_stage(self) -> Compiled:
        return self._compile(
            select(func.count())
            .select_from(leads)
            .where(L.flow == bindparam("flow"), L.stage == bindparam("stage"))
        )

    def lead_page(self, first: bool, by_flow: bool, by_stages: bool) -> Select[Any]:
        """Leads in id order after ``:after``, at most ``:chunk`` of them (run
        with `Connection.execute`: the stage list is an expanding ``IN``)."""
        key = (first, by_flow, by_stages)
        stmt = self._lead_pages.get(key)
        if stmt is None:
            stmt = select(*LEAD_COLUMNS).order_by(L.id).limit(bindparam("chunk", type_=Integer))
            if not first:
                stmt = stmt.where(L.id > bindparam("after"))
            if by_flow:
                stmt = stmt.where(L.flow == bindparam("flow"))
            if by_stages:
                stmt = stmt.where(L.stage.in_(bindparam("stages", expanding=True)))
            self._lead_pages[key] = stmt
        return stmt

    def due_page(self, first: bool, by_flow: bool) -> Select[Any]:
        """The leads due at ``:now`` (``due_at <= :now``) in id order after
        ``:after``, at most ``:chunk`` of them; read through the due index
        (the range of due leads is scanned, not every lead)."""
        key = ("due", first, by_flow)
        stmt = self._due_pages.get(key)
        if stmt is None:
            # Both planners may prefer walking the primary key in id order
            # (no sort) and testing every lead's due_at, which reads the
            # whole table when few leads are due; `id || ''` keeps the id's
            # value and order (byte-wise: collation "C" on PostgreSQL, as
            # the column) but hides it from the primary key index, so the
            # due range is read from the due index and sorted.
            by_id: Any = L.id.concat(literal_column("''", Text))
            if self.pg:
                by_id = by_id.collate("C")
            stmt = (
                select(*LEAD_COLUMNS)
                .where(L.due_at <= bindparam("now", type_=L.due_at.type))
                .order_by(by_id)
                .limit(bindparam("chunk", type_=Integer))
            )
            if not first:
                stmt = stmt.where(by_id > bindparam("after", type_=L.id.type))
            if by_flow:
                stmt = stmt.where(L.flow == bindparam("flow", type_=L.flow.type))
            self._due_pages[key] = stmt
        return stmt

    def claim_due(self, by_flow: bool) -> Compiled:
        """Up to ``:limit`` leads due at ``:now``, earliest due first (then
        id), locked for this transaction skipping rows another holds
        (PostgreSQL); the plain select on SQLite."""
        found = self._claims.get(by_flow)
        if found is None:
            stmt = (
                select(*LEAD_COLUMNS)
                .where(L.due_at <= bindparam("now", type_=L.due_at.type))
                .order_by(L.due_at, L.id)
                .limit(bindparam("limit", type_=Integer))
            )
            if by_flow:
                stmt = stmt.where(L.flow == bindparam("flow", type_=L.flow.type))
            if self.pg:
                stmt = stmt.with_for_update(skip_locked=True)
            found = self._claims[by_flow] = self._compile(stmt)
        return found

    # -- events -------------------------------------------------------------

    @cached_property
    def events(self) -> Compiled:
        return self._compile(
            select(*EVENT_COLUMNS)
            .where(E.lead_id == bindparam("lead_id"), E.cycle == bindparam("cycle"))
            .order_by(E.at, E.id)
        )

    @cached_property
    def events_of(self) -> Compiled:
        return self._compile(
            select(*EVENT_COLUMNS).where(E.lead_id == bindparam("lead_id")).order_by(E.at, E.id)
        )

    @cached_property
    def insert_event(self) -> Compiled:
        return self._compile(events.insert().inline(), events)

    # -- journal ------------------------------------------------------------

    @cached_property
    def journal_head(self) -> Compiled:
        """A lead's newest entry: (lead_seq, hash)."""
        return self._compile(
            select(J.lead_seq, J.hash)
            .where(J.lead_id == bindparam("lead_id"))
            .order_by(J.lead_seq.desc())
            .limit(1)
        )

    @cached_property
    def journal_last_seq(self) -> Compiled:
        """The largest `seq` written (SQLite, where one writer at a time counts on)."""
        return self._compile(select(func.coalesce(func.max(J.seq), 0)))

    def next_seqs(self, count: int) -> str:
        """PostgreSQL: `count` new values of the journal's sequence, one per row."""
        return f"SELECT nextval('{JOURNAL_SEQUENCE}') FROM generate_series(1, {int(count)})"

    @cached_property
    def lead_journal(self) -> Compiled:
        return self._compile(
            select(*JOURNAL_COLUMNS).where(J.lead_id == bindparam("lead_id")).order_by(J.lead_seq)
        )

    @cached_property
    def insert_journal(self) -> Compiled:
        return self._compile(journal.insert(), journal)

    @cached_property
    def journal_row(self) -> Callable[[JournalEntry], Any]:
        """The `insert_journal` parameters of a sealed entry.  On SQLite,
        where JSON is text, the data goes in as the text the entry's hash
        was computed over (canonical JSON), not encoded a second time."""
        if self.dialect.name == "sqlite":
            return self.insert_journal.binder(_journal_values_as_text, JOURNAL_KEYS, ready=("data",))
        return self.insert_journal.binder(_journal_values, JOURNAL_KEYS)

    @cached_property
    def journal_first(self) -> Compiled:
        return self._compile(
            select(*JOURNAL_COLUMNS).order_by(J.lead_id, J.lead_seq).limit(bindparam("chunk", type_=Integer))
        )

    @cached_property
    def journal_next(self) -> Compiled:
        after = tuple_(bindparam("after_lead", type_=J.lead_id.type), bindparam("after_seq", type_=Integer))
        return self._compile(
            select(*JOURNAL_COLUMNS)
            .where(tuple_(J.lead_id, J.lead_seq) > after)
            .order_by(J.lead_id, J.lead_seq)
            .limit(bindparam("chunk", type_=Integer))
        )

    @cached_property
    def lead_row(self) -> Callable[[Lead], Any]:
        """The `insert_lead` parameters of a lead."""
        return self.insert_lead.binder(_lead_values, LEAD_KEYS)

    # -- capacity and SLAs --------------------------------------------------

    @cached_property
    def advisory_lock(self) -> Compiled | None:
        """``pg_advisory_xact_lock(:key)``; None on SQLite, where BEGIN
        IMMEDIATE already serialises every writer."""
        if not self.pg:
            return None
        return self._compile(select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger))))

    @cached_property
    def add_waiting(self) -> Compiled:
        wait = self._upsert(waiting)
        same_stage = and_(W.flow == wait.excluded.flow, W.stage == wait.excluded.stage)
        stmt = wait.on_conflict_do_update(
            index_elements=[W.lead_id],
            set_={
                "flow": wait.excluded.flow,
                "stage": wait.excluded.stage,
                "score": wait.excluded.score,
                "since": case((same_stage, W.since), else_=wait.excluded.since),
            },
        )
        return self._compile(stmt, waiting)

    @cached_property
    def remove_waiting(self) -> Compiled:
        return self._compile(waiting.delete().where(W.lead_id == bindparam("lead_id")))

    @cached_property
    def waiting(self) -> Compiled:
        return self._compile(
            select(W.lead_id)
            .where(W.flow == bindparam("flow"), W.stage == bindparam("stage"))
            .order_by(W.score.desc(), W.since, W.lead_id)
            .limit(bindparam("limit", type_=Integer))
        )

    @cached_property
    def waiting_line(self) -> Compiled:
        """The leads waiting for a stage with the time each started waiting,
        best stored score first (read, not locked: `Work._fill` ranks them by
        their score now, then locks each one it lets in)."""
        return self._compile(
            select(*LEAD_COLUMNS, W.since)
            .join_from(waiting, leads, W.lead_id == L.id)
            .where(W.flow == bindparam("flow"), W.stage == bindparam("stage"))
            .order_by(W.score.desc(), W.since, W.lead_id)
            .limit(bindparam("limit", type_=Integer))
        )

    @cached_property
    def breaches_of(self) -> Compiled:
        S = sla_breaches.c
        columns = (S.lead_id, S.flow, S.stage, S.cycle, S.entered_at, S.due_at, S.detected_at)
        return self._compile(
            select(*columns).where(S.lead_id == bindparam("lead_id")).order_by(S.detected_at)
        )

    @cached_property
    def record_breach(self) -> Compiled:
        stmt = self._upsert(sla_breaches).on_conflict_do_nothing(
            index_elements=["lead_id", "stage", "cycle", "entered_at"]
        )
        return self._compile(stmt, sla_breaches)

    # -- flows --------------------------------------------------------------

    @cached_property
    def latest_version(self) -> Compiled:
        return self._compile(select(func.max(F.version)).where(F.name == bindparam("name")))

    @cached_property
    def flow_versions(self) -> Compiled:
        return self._compile(
            select(F.version, F.content_hash, F.source).where(F.name == bindparam("name")).order_by(F.version)
        )

    @cached_property
    def insert_flow(self) -> Compiled:
        return self._compile(flows.insert(), flows)


_BY_DIALECT: dict[str, Statements] = {}


# The dataclasses' attributes are named as their columns, in column order.
LEAD_KEYS: tuple[str, ...] = tuple(c.key for c in LEAD_COLUMNS)
JOURNAL_KEYS: tuple[str, ...] = tuple(c.key for c in JOURNAL_COLUMNS)
_lead_values = attrgetter(*LEAD_KEYS)
_journal_attrs = attrgetter(*JOURNAL_KEYS)
_JOURNAL_DOC = JOURNAL_KEYS.index("data")


def _journal_values_as_text(entry: JournalEntry) -> tuple[Any, ...]:
    values = _journal_attrs(entry)
    return (*values[:_JOURNAL_DOC], entry.canonical_data(), *values[_JOURNAL_DOC + 1 :])


def _journal_values(entry: JournalEntry) -> tuple[Any, ...]:
    values = _journal_attrs(entry)
    if type(values[_JOURNAL_DOC]) is not dict:  # any Mapping: the JSON encoder takes a dict
        values = (*values[:_JOURNAL_DOC], dict(values[_JOURNAL_DOC]), *values[_JOURNAL_DOC + 1 :])
    return values


def read_leads(conn: Any, stmt: Any, params: dict[str, Any] | None = None) -> list[Lead]:
    """The leads a statement ordered by id selects; a corrupted row is
    `Corrupt` naming its lead (the first after the last one read: the rows
    come in id order)."""
    page: list[Lead] = []
    try:
        for row in conn.execute(stmt, params or {}):
            page.append(Lead(*row))
    except Corrupt as err:
        culprit = stmt.with_only_columns(leads.c.id)
        if page:
            culprit = culprit.where(leads.c.id > page[-1].id)
        found = conn.execute(culprit.limit(1), params or {}).scalar()
        raise err if found is None else err.naming(found) from None
    return page


def statements(dialect: Dialect) -> Statements:
    """The compiled statements for `dialect` (built once per process)."""
    key = f"{dialect.name}+{dialect.driver}@{dialect.server_version_info}"
    found = _BY_DIALECT.get(key)
    if found is None:
        found = _BY_DIALECT[key] = Statements(dialect)
    return found
