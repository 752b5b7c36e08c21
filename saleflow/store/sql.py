"""`SqlStore`: the `Store` protocol on SQLAlchemy, and `open_store`.

The store's plumbing (connections, transactions, autocommit reads), its
flows, and the journal's published position (`high_water`).  Its jobs live
beside it: one write transaction is a `SqlTransaction` (store/transaction.py,
which seals and writes the journal at the commit), the key check is `Seal`
(store/seal.py), and the reads of leads, events and journal are mixed in from
`LeadQueries` (store/reading.py), as the report and export reads are.

Reads outside a transaction (`get_lead`, `history`, `iter_leads`) are single
statements in autocommit: no BEGIN or COMMIT round trips, never blocking a
writer.  Reports that need one consistent snapshot over several queries use
`read`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from ..errors import BadInput, NotFound
from ..journal import key_from_environment
from ..model.identity import is_identity
from ..records import DEFAULT_URL, Store, Transaction
from .connect import (
    BEGIN_OPTION,
    advisory_key,
    autocommit,
    check_sqlite_file,
    db_errors,
    describe,
    ensure_schema,
    make_engine,
    parse_url,
    sqlite_file,
    translate,
)
from .exporting import ExportQueries
from .reading import LeadQueries
from .reporting import ReportQueries
from .schema import JOURNAL_SEQUENCE, flows, journal, journal_seal, waiting
from .seal import SEAL_ROW, Seal
from .statements import Compiled, statements
from .transaction import JOURNAL_LOCK, SqlTransaction, is_broken

T = TypeVar("T")


def deployed_as(
    name: str,
    declared_version: int,
    content_hash: str,
    existing: Sequence[Sequence[Any]],
    identity_of: Callable[[str], str | None] | None,
) -> int | None:
    """What deploying content `content_hash` at `declared_version` means
    against the deployed rows `existing` (version, hash, source): the
    version it already is, None when it is new and may be stored at its
    declared version, or `BadInput` naming the version to use.  Shared by
    `deploy_flow` and the dry run (`deployed_versions`)."""
    for version, known_hash, known_source in existing:
        if known_hash == content_hash:
            return int(version)
        legacy = identity_of is not None and not is_identity(known_hash)
        if legacy and identity_of(known_source) == content_hash:  # type: ignore[misc]
            return int(version)
    latest = max((int(version) for version, _, _ in existing), default=0)
    if declared_version <= latest:
        taken = any(int(version) == declared_version for version, _, _ in existing)
        why = (
            "is already deployed with other content"
            if taken
            else f"is below the latest deployed version {latest}"
        )
        raise BadInput(
            f'flow "{name}" version {declared_version} {why}; raise its version to '
            f'{latest + 1} ("flow {name} version {latest + 1}") to deploy this change'
        )
    return None


class SqlStore(LeadQueries, ReportQueries, ExportQueries):
    """A saleflow database (the `Store` protocol of records.py); see `open_store`."""

    def __init__(self, url: str, engine: Engine, where: str, key: bytes | None = None) -> None:
        self.url = url
        self._key = key
        self._seal = Seal(key, where)
        self._engine = engine
        self._where = where
        self._sql = statements(engine.dialect)
        self._errors = db_errors(engine)
        self._pinned = threading.local()
        # The URL another process opens the same database with (a SQLite
        # file's path is absolute: `open_store`).
        self._shared_url: str | None = (
            url
            if engine.dialect.name != "sqlite"
            else None
            if sqlite_file(engine.url) is None
            else engine.url.render_as_string(hide_password=False)
        )

    # -- plumbing -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for read-only views (reports)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def shared_url(self) -> str | None:
        """The URL another process opens this same database with: a
        server's, or a SQLite file's by its absolute path as it was when
        the store was opened; None for an in-memory SQLite database, which
        every connection would open afresh and empty."""
        return self._shared_url

    def _writer(self) -> Connection | None:
        """This thread's write connection, kept between transactions: a pool
        checkout and return per operation cost about a third of a small
        write.  None while it is busy (a transaction inside a transaction
        takes a pooled connection); dropped after any failure."""
        conn: Connection | None = getattr(self._pinned, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._engine.connect()
            self._pinned.conn = conn
        return None if conn.in_transaction() else conn

    def _unpin(self) -> None:
        conn: Connection | None = getattr(self._pinned, "conn", None)
        self._pinned.conn = None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def _begin(self, read: bool) -> tuple[Connection, bool]:
        """A connection in a new transaction, and whether it is the pinned one."""
        try:
            pinned = None if read else self._writer()
            conn = pinned or self._engine.connect()
        except self._errors as exc:
            raise translate(exc, self._where) from exc
        try:
            if read:
                conn.execution_options(**{BEGIN_OPTION: "deferred"})
            conn.begin()  # on SQLite the "begin" event emits BEGIN IMMEDIATE / BEGIN
        except self._errors as exc:
            conn.close()
            raise translate(exc, self._where) from exc
        except BaseException:
            conn.close()
            raise
        return conn, pinned is not None

    @contextmanager
    def _session(self, read: bool) -> Iterator[Connection]:
        """A transaction: committed when the block ends, rolled back on an error."""
        conn, pinned = self._begin(read)
        try:
            yield conn
            conn.commit()
        except self._errors as exc:
            _abandon(conn)
            if pinned:
                self._unpin()
            raise translate(exc, self._where) from exc
        except BaseException:
            _abandon(conn)
            if pinned:
                self._unpin()
            raise
        finally:
            if not pinned:
                conn.close()

    def _query(self, run: Callable[[Connection], T]) -> T:
        """`run` on a connection in autocommit, for reads that are one
        statement each: no BEGIN and COMMIT round trips.  A pooled connection
        the server dropped is replaced once, transparently (reads are safe to
        repeat)."""
        for attempt in (1, 2):
            try:
                conn = autocommit(self._engine.connect())
            except self._errors as exc:
                raise translate(exc, self._where) from exc
            try:
                return run(conn)
            except self._errors as exc:
                broken = is_broken(conn)
                _abandon(conn)
                if broken and attempt == 1:
                    continue
                raise translate(exc, self._where) from exc
            finally:
                conn.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, stmt: Compiled, params: dict[str, Any]) -> list[list[Any]]:
        """The rows of one precompiled read statement."""

        def run(conn: Connection) -> list[list[Any]]:
            cur = _cursor(conn)
            try:
                return stmt.all(cur, params)
            finally:
                cur.close()

        return self._query(run)

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """One write transaction: commits when the block ends, rolls back when
        it raises.  Database failures surface as `Conflict` (retry) or
        `StoreError`."""
        with self._session(read=False) as conn:
            tx = SqlTransaction(conn, self._sql, self._where, self._key, self._seal)
            try:
                yield tx
                tx.write_journal()
            finally:
                tx.close()

    def high_water(self) -> int:
        """The journal's published position: every entry at or below it is
        committed, or was rolled back and will never appear, so a reader
        that has read everything up to it and resumes above it misses
        nothing (see `SqlTransaction.write_journal` for why).  0 when the
        journal is empty."""

        if not self._sql.pg:
            # One writer at a time, committing in `seq` order: what is
            # visible is final.
            return int(
                self._query(
                    lambda conn: conn.execute(select(func.coalesce(func.max(journal.c.seq), 0))).scalar_one()
                )
            )
        with self._session(read=False) as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({JOURNAL_LOCK})")
            value = conn.exec_driver_sql(
                f"SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {JOURNAL_SEQUENCE}"
            ).scalar_one()
        return int(value)

    @property
    def key(self) -> bytes | None:
        """The key the journal is sealed with (None: plain SHA-256)."""
        return self._key

    @property
    def where(self) -> str:
        """How messages name this database."""
        return self._where

    def sealed_with(self) -> str | None:
        """The fingerprint in `journal_seal` (`key_fingerprint` of the key
        the journal is sealed with), None if it has not been sealed yet."""
        stmt = select(journal_seal.c.fingerprint).where(journal_seal.c.id == SEAL_ROW)
        return self._query(lambda conn: conn.execute(stmt).scalar())

    def check_key(self) -> None:
        """Raise `WrongKey` (one sentence) if the journal is sealed with
        another key than this store's; a read, for `audit verify`."""
        self._seal.refuse_other(self.sealed_with(), reading=True)

    def forget_seal(self) -> None:
        """Check the key again at the next write (after `audit rekey`)."""
        self._seal = Seal(self._key, self._where)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (one consistent snapshot) for queries the
        protocol does not cover, such as reports: a plain ``BEGIN`` that never
        blocks writers.  Do not write through it."""
        with self._session(read=True) as conn:
            yield conn

    def close(self) -> None:
        self._unpin()
        self._engine.dispose()

    def __enter__(self) -> SqlStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqlStore({self._where})"

    # -- flows ----------------------------------------------------------------

    def deploy_flow(
        self,
        name: str,
        declared_version: int,
        content_hash: str,
        source: str,
        path: str,
        at: datetime | None = None,
        *,
        identity_of: Callable[[str], str | None] | None = None,
    ) -> tuple[int, bool]:
        """Register a flow's source at its declared version; returns
        (version, created).

        Content already deployed (the same `content_hash`, or a stored
        source whose `identity_of` is it: rows written before identities
        existed hold a hash of the raw text) returns the version it has.
        Changed content is stored at its declared version, which must be
        above every deployed one: never silently renumbered (SPEC §7)."""
        with self._session(read=False) as conn:
            cur = _cursor(conn)
            try:
                lock = self._sql.advisory_lock
                if lock is not None:
                    lock.execute(cur, {"key": advisory_key("deploy", name)})
                existing = self._sql.flow_versions.all(cur, {"name": name})
                known = deployed_as(name, declared_version, content_hash, existing, identity_of)
                if known is not None:
                    return known, False
                row = {
                    "name": name,
                    "version": declared_version,
                    "content_hash": content_hash,
                    "source": source,
                    "path": path,
                    "deployed_at": at or datetime.now(UTC),
                }
                self._sql.insert_flow.execute(cur, row)
                return declared_version, True
            finally:
                cur.close()

    def flow_source(self, name: str, version: int | None = None) -> tuple[int, str, str]:
        """(version, source, path) of a deployed flow; the latest when version is None."""
        F = flows.c
        stmt = select(F.version, F.source, F.path).where(F.name == name)
        if version is None:
            stmt = stmt.order_by(F.version.desc()).limit(1)
        else:
            stmt = stmt.where(F.version == version)

        def query(conn: Connection) -> tuple[Any, list[Any]]:
            row = conn.execute(stmt).first()
            known = [] if row is not None else list(conn.execute(select(F.version).where(F.name == name)))
            return row, known

        row, known = self._query(query)
        if row is None:
            if not known:
                raise NotFound(f'flow "{name}" is not deployed')
            listed = ", ".join(str(v) for (v,) in sorted(known))
            raise NotFound(f'flow "{name}" has no version {version} (deployed versions: {listed})')
        return int(row[0]), row[1], row[2]

    def latest_version(self, name: str) -> int:
        stmt = select(func.max(flows.c.version)).where(flows.c.name == name)
        found = self._query(lambda conn: conn.execute(stmt).scalar())
        if found is None:
            raise NotFound(f'flow "{name}" is not deployed')
        return int(found)

    def flow_names(self) -> list[str]:
        stmt = select(flows.c.name).distinct().order_by(flows.c.name)
        return self._query(lambda conn: list(conn.execute(stmt).scalars()))

    # -- leads (the rest are `LeadQueries`, store/reading.py) ---------------

    def lead_flows(self, ids: Iterable[str]) -> dict[str, tuple[str, int, datetime]]:
        from .bulk import lead_flows

        return lead_flows(self, ids)

    # -- reads for dry runs (migration.py): nothing here writes ----------------

    def deployed_versions(self, name: str) -> list[tuple[int, str, str]]:
        """(version, content hash, source) of every deployed version of `name`."""
        stmt = self._sql.flow_versions
        return [(int(v), h, s) for v, h, s in self._fetch(stmt, {"name": name})]

    def waiting_of(self, flow: str) -> list[tuple[str, str, float, datetime]]:
        """The waiting line of every stage of `flow`: (lead, stage, score, since)."""
        W = waiting.c
        stmt = select(W.lead_id, W.stage, W.score, W.since).where(W.flow == flow).order_by(W.lead_id)
        return self._query(lambda conn: [tuple(row) for row in conn.execute(stmt)])


def _cursor(conn: Connection) -> Any:
    """A driver cursor of `conn`, for the precompiled statements; close it."""
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


def _abandon(conn: Connection) -> None:
    """Roll back; drop the connection from the pool if the server dropped it."""
    broken = is_broken(conn)
    with suppress(Exception):
        conn.rollback()
    if broken:
        with suppress(Exception):
            conn.invalidate()


def open_store(url: str = DEFAULT_URL, *, lock_timeout: float = 5.0, key: bytes | None = None) -> SqlStore:
    """Open the saleflow database at `url`, creating or migrating its schema
    on first use.

    `lock_timeout` is how many seconds a writer waits for another one (SQLite
    busy timeout, PostgreSQL ``lock_timeout``) before its transaction fails
    with `Conflict`.  Raises `StoreError`, one sentence, when the database
    cannot be used: a bad URL, an unreachable server, a read-only or
    non-database file, a schema written by a newer saleflow.

    `key` seals the journal (HMAC-SHA256); by default ``SALEFLOW_AUDIT_KEY``,
    and ``b""`` for none whatever the environment says."""
    parsed = parse_url(url)
    where = describe(parsed)
    path = sqlite_file(parsed)
    if path is not None:
        check_sqlite_file(path)
        # Every pooled connection opens the file again: a relative path is
        # the file in this directory, wherever the process goes later.
        parsed = parsed.set(database=os.path.abspath(path))
    engine = make_engine(parsed, busy_timeout_ms=max(1, round(lock_timeout * 1000)))
    try:
        ensure_schema(engine, where)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(url, engine, where, key_from_environment() if key is None else key or None)


if TYPE_CHECKING:  # mypy proves the classes implement the protocols of records.py

    def _implements(store: SqlStore, tx: SqlTransaction) -> tuple[Store, Transaction]:
        return store, tx


__all__ = ["SqlStore", "SqlTransaction", "open_store"]
