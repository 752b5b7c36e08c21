"""Turning a ``--db`` URL into a ready SQLAlchemy engine, and database
failures into saleflow errors.

Opening a store must be cheap, because every CLI call does it: the URL and
(for SQLite) the file are checked with a few ``stat`` calls, one query reads
``alembic_version``, and Alembic is imported only when the schema is missing
or behind.  Every way a database can be unusable ends as one `StoreError`
sentence; every way a write can lose a race ends as `Conflict`, which the
engine retries.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from ..errors import BadInput, Conflict, SaleflowError, StoreError, Unavailable
from ..jsontext import compact
from ..limits import MAX_ID_LENGTH, check_text
from .schema import KNOWN_REVISIONS, SCHEMA_HEAD, Corrupt

BUSY_TIMEOUT_MS = 5000  # how long a writer waits for another (SQLite busy_timeout, PostgreSQL lock_timeout)
CONNECT_TIMEOUT_S = 5
# Execution option naming how a connection begins on SQLite: "immediate"
# (the default: writers), "deferred" (consistent reads) or "none" (one-
# statement reads, in autocommit).
BEGIN_OPTION = "saleflow_begin"


def advisory_key(*parts: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATION_LOCK = advisory_key("saleflow", "migrate")


# ---------------------------------------------------------------------------
# URL and engine
# ---------------------------------------------------------------------------


def parse_url(url: str) -> URL:
    """The SQLAlchemy URL for a ``--db`` value; bare ``postgresql://`` means psycopg 3."""
    try:
        check_text(url, "the database URL", limit=16 * MAX_ID_LENGTH)
    except BadInput as exc:
        raise StoreError(exc.message) from None
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError, TypeError) as exc:
        raise StoreError(
            f'"{url}" is not a database URL (expected sqlite:///FILE or postgresql+psycopg://USER@HOST/DB)'
        ) from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend in ("postgresql", "postgres"):
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif driver != "psycopg":
            raise StoreError(
                f'unsupported PostgreSQL driver "{driver}" in "{url}" (use postgresql+psycopg://…)'
            )
    elif backend == "sqlite":
        if driver != "pysqlite":
            raise StoreError(f'unsupported SQLite driver "{driver}" in "{url}" (use sqlite:///FILE)')
        if parsed.host or parsed.port or parsed.username or parsed.password:
            raise StoreError(
                f'"{url}" names a host, but a SQLite database is a file: use sqlite:///FILE '
                "(three slashes; four before an absolute path)"
            )
    else:
        raise StoreError(f'saleflow stores its data in SQLite or PostgreSQL, not "{backend}" ("{url}")')
    return parsed


def describe(url: URL) -> str:
    """How error messages name a database: the file, or the URL without its password."""
    if url.get_backend_name() == "sqlite":
        return f'"{url.database}"' if url.database and url.database != ":memory:" else "in memory"
    return url.render_as_string(hide_password=True)


def sqlite_file(url: URL) -> str | None:
    """The file behind a SQLite URL, or None for memory, ``file:`` URIs and
    every other kind of database."""
    if url.get_backend_name() != "sqlite":
        return None
    db = url.database
    if not db or db == ":memory:" or db.startswith("file:") or url.query.get("uri") in ("true", "1"):
        return None
    return db


def check_sqlite_file(path: str) -> None:
    """Refuse, before SQLite touches anything, a file saleflow could not write."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise StoreError(f'"{path}" is a folder, not a database file')
    if os.path.exists(path):
        if not os.access(path, os.R_OK):
            raise StoreError(f'cannot read the database file "{path}" (permission denied)')
        if not os.access(path, os.W_OK):
            raise StoreError(f'the database file "{path}" is read-only')
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StoreError(
                f'the folder of the database file "{path}" is read-only '
                "(SQLite keeps its journal next to the file)"
            )
    elif not os.path.isdir(folder):
        raise StoreError(f'cannot create the database file "{path}": the folder "{folder}" does not exist')
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f'cannot create the database file "{path}": the folder "{folder}" is read-only')


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver must not BEGIN on its own: `_sqlite_on_begin` emits the
        # BEGIN (SQLAlchemy's pysqlite "serializable isolation" recipe).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if cur.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    return on_connect


_BEGIN = {"immediate": "BEGIN IMMEDIATE", "deferred": "BEGIN", "none": None}


def _sqlite_on_begin(conn: Connection) -> None:
    # Writers take the write lock up front, so two writers queue on the
    # busy timeout instead of deadlocking on a lock upgrade; readers use a
    # plain deferred transaction and never block a writer (WAL).  Sent on
    # the driver connection: the hot path pays for no statement machinery.
    begin = _BEGIN[conn.get_execution_options().get(BEGIN_OPTION, "immediate")]
    if begin is not None:
        conn.connection.dbapi_connection.execute(begin)  # type: ignore[union-attr]


def autocommit(conn: Connection) -> Connection:
    """Put `conn` in autocommit for one-statement reads: no BEGIN/COMMIT
    round trips.  (Not SQLAlchemy's AUTOCOMMIT level on SQLite: resetting it
    would hand transaction control back to the sqlite3 driver.)"""
    if conn.dialect.name == "sqlite":
        return conn.execution_options(**{BEGIN_OPTION: "none"})
    return conn.execution_options(isolation_level="AUTOCOMMIT")


def make_engine(url: URL, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """An engine for `url`; a writer waits up to `busy_timeout_ms` for another
    before giving up with `Conflict`."""
    kwargs: dict[str, Any] = {"json_serializer": compact}
    if url.get_backend_name() == "postgresql":
        query = url.query
        options = query.get("options", "")
        options = options if isinstance(options, str) else " ".join(options)
        connect_args: dict[str, Any] = {
            "options": f"{options} -c timezone=UTC -c lock_timeout={int(busy_timeout_ms)}".strip()
        }
        if "connect_timeout" not in query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        kwargs["connect_args"] = connect_args
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError, TypeError) as exc:
        reason = first_line(exc)
        if isinstance(exc, ImportError) and url.get_backend_name() == "postgresql":
            # psycopg is the `postgresql` extra: SQLite users do not install it.
            reason = "PostgreSQL needs the psycopg driver (pip install 'saleflow[postgresql]')"
        raise StoreError(f"cannot use the database {describe(url)}: {reason}") from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

_PG_CONFLICT = {"40001", "40P01", "55P03", "23505"}  # serialization, deadlock, lock timeout, unique
_SQLITE_CONFLICT = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CONSTRAINT_UNIQUE",
    "SQLITE_CONSTRAINT_PRIMARYKEY",
)


def first_line(exc: BaseException) -> str:
    """An exception's message as one line (SQLAlchemy's run to several)."""
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.splitlines()[0].split()).rstrip(".:")


def _reason(orig: BaseException) -> str:
    text = str(orig).strip() or type(orig).__name__
    first = " ".join(text.splitlines()[0].replace("FATAL:", "").split())
    return first.removeprefix("connection failed: ").rstrip(".")


# PostgreSQL refusals that a retry cannot cure: no such database, no such
# role, failed authentication (psycopg reports them at connect time without
# a SQLSTATE, so their server message is read too).
_PG_REFUSED = frozenset({"3D000", "28000", "28P01"})
_REFUSED = re.compile(r'(database|role) "[^"]*" does not exist|authentication failed|no pg_hba\.conf entry')


def db_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """What a database failure can raise: SQLAlchemy's wrapper, or the
    driver's own error where saleflow talks to the driver directly."""
    return (DBAPIError, engine.dialect.loaded_dbapi.Error)


def translate(
    exc: BaseException, where: str, conflict: str | None = None, failed: str | None = None
) -> SaleflowError:
    """One saleflow error for a database failure (SQLAlchemy's `DBAPIError`
    or the driver's own).  `conflict` is the sentence to use when the failure
    is a lost race, which the engine may retry; `failed` opens the sentence
    for any other refusal."""
    orig = (exc.orig or exc) if isinstance(exc, DBAPIError) else exc
    invalidated = isinstance(exc, DBAPIError) and exc.connection_invalidated
    state = getattr(orig, "sqlstate", None)
    name = getattr(orig, "sqlite_errorname", None) or ""
    reason = _reason(orig)
    default_conflict = f"the database {where} is busy: another process kept it locked too long"
    if name.startswith(_SQLITE_CONFLICT) or state in _PG_CONFLICT:
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or state in ("40001", "40P01", "55P03"):
            return Conflict(default_conflict if conflict is None else conflict)
        return Conflict(conflict or f"a concurrent write to the database {where} won the race ({reason})")
    if name.startswith("SQLITE_READONLY") or state == "25006":
        return StoreError(f"the database {where} is read-only")
    if name.startswith("SQLITE_NOTADB"):
        return StoreError(f"{where} is not a SQLite database")
    if name.startswith("SQLITE_CORRUPT"):
        return StoreError(f"the database file {where} is corrupt")
    if name.startswith("SQLITE_CANTOPEN"):
        return StoreError(f"cannot open the database file {where}")
    if name.startswith("SQLITE_FULL"):
        return StoreError(f"the disk holding the database {where} is full")
    psycopg = type(orig).__module__.startswith("psycopg")
    if psycopg and state is None and type(orig).__name__ == "DataError":
        # The driver could not load a stored value (a timestamp of
        # 'infinity'): nothing saleflow writes.
        return Corrupt(f"a value saleflow cannot read ({reason})")
    operational = any(cls.__name__ == "OperationalError" for cls in type(orig).__mro__)
    if psycopg and (state in _PG_REFUSED or (state is None and operational and _REFUSED.search(reason))):
        # The server answered and refused for good (no such database or
        # role, bad credentials): fix the URL, retrying will not help.
        return StoreError(f"cannot connect to the database {where}: {reason}")
    if invalidated or (
        psycopg and ((state is None and operational) or (state or "").startswith(("08", "57P")))
    ):
        return Unavailable(f"cannot connect to the database {where}: {reason}")
    return StoreError(f"{failed or f'the database {where} refused the operation'}: {reason}")


# ---------------------------------------------------------------------------
# Schema version
# ---------------------------------------------------------------------------


def _is_missing_table(exc: DBAPIError) -> bool:
    state = getattr(exc.orig, "sqlstate", None)
    return state == "42P01" or "no such table" in str(exc.orig)


def _schema_revisions(conn: Connection, keep_transaction: bool = False) -> set[str] | None:
    """The revisions stamped in ``alembic_version``; None when there is no such table."""
    # A failed statement would abort a whole PostgreSQL transaction; ask first.
    if (
        keep_transaction
        and conn.dialect.name == "postgresql"
        and conn.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar() is None
    ):
        return None
    try:
        return {row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")}
    except DBAPIError as exc:
        if _is_missing_table(exc):
            return None
        raise


def _refuse_newer(revisions: set[str], where: str) -> None:
    unknown = revisions - KNOWN_REVISIONS
    if unknown:
        raise StoreError(
            f"the database {where} has schema revision {', '.join(sorted(unknown))}, "
            f"newer than this saleflow knows (up to {SCHEMA_HEAD}); upgrade saleflow to use it"
        )


def ensure_schema(engine: Engine, where: str) -> bool:
    """Create or upgrade the schema if needed; True if migrations ran.

    The common case (schema current) costs one query and no Alembic import.
    """
    try:
        with engine.connect() as conn:
            revisions = _schema_revisions(autocommit(conn))
    except db_errors(engine) as exc:
        raise translate(exc, where) from exc
    except (ValueError, TypeError) as exc:
        # A connection argument of the URL the driver refuses (timeout=x,
        # a NUL byte in a file name): nothing has been opened.
        raise StoreError(f"cannot use the database {where}: {first_line(exc)}") from exc
    if revisions is not None:
        _refuse_newer(revisions, where)
        if revisions == {SCHEMA_HEAD}:
            return False
    _migrate(engine, where)
    return True


def _migrate(engine: Engine, where: str) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", "saleflow:migrations")
    try:
        # One transaction: BEGIN IMMEDIATE on SQLite, an advisory lock on
        # PostgreSQL.  A concurrent first use waits here and then finds the
        # schema current; a failure leaves no half-created schema behind.
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            revisions = _schema_revisions(conn, keep_transaction=True)
            if revisions is not None:
                _refuse_newer(revisions, where)
            config.attributes["connection"] = conn
            logging.getLogger("saleflow").info(
                "migrating the database %s from revision %s to %s",
                where,
                ", ".join(sorted(revisions)) if revisions else "none",
                SCHEMA_HEAD,
            )
            command.upgrade(config, "head")
    except db_errors(engine) as exc:
        raise translate(exc, where, failed=f"cannot create the saleflow tables in {where}") from exc
    except (CommandError, SQLAlchemyError) as exc:
        raise StoreError(f"cannot migrate the database {where}: {exc}") from exc
