"""The tables, as SQLAlchemy Core metadata, and the column types they need.

This is the live description the store's statements are built from.  The
database itself is created and changed only by the Alembic migrations in
``saleflow/migrations/versions``; a test checks that the migrated schema and
this metadata agree on both backends.

Times are timezone-aware UTC everywhere.  PostgreSQL stores them as
``timestamptz``; SQLite has no time type, so they are stored as fixed-width
ISO 8601 text (``2024-05-01T09:30:00.000000+00:00``), which sorts in time
order, compares correctly against bound values, and is understood by SQLite's
own date functions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ..errors import StoreError
from ..limits import MAX_TIME, MIN_TIME

# The newest migration this code knows, and every one it can upgrade from.
# Kept here (not read from the migration scripts) so that opening a store
# never has to import Alembic; `tests/test_store.py` checks they agree.
SCHEMA_HEAD = "0006"
KNOWN_REVISIONS: frozenset[str] = frozenset({"0001", "0002", "0003", "0004", "0005", "0006"})


class Corrupt(StoreError):
    """A stored value saleflow never writes (edited behind its back, or a
    damaged file): a time that does not parse or lies outside the range of
    limits.py, fields that are not a JSON object of plain values.  The store
    adds which lead holds it (`naming`)."""

    def __init__(self, what: str, lead_id: str | None = None) -> None:
        self.what = what
        self.lead_id = lead_id
        whose = f'lead "{lead_id}"' if lead_id is not None else "a lead"
        super().__init__(
            f"the database is corrupted: {whose} has {what}; restore it from a backup "
            "or correct the row behind it"
        )

    def naming(self, lead_id: str) -> Corrupt:
        """This error, naming `lead_id` unless it names a lead already."""
        return self if self.lead_id is not None else Corrupt(self.what, lead_id)


_DECODE_FAILURES = (ValueError, TypeError, AttributeError, OverflowError, KeyError, IndexError)


class _Checked:
    """Result processing that turns a value saleflow cannot read into `Corrupt`."""

    what = "a value that cannot be read"

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        inner = super().result_processor(dialect, coltype)  # type: ignore[misc]
        if inner is None:
            return None
        what = self.what

        def process(value: Any) -> Any:
            try:
                return inner(value)
            except Corrupt:
                raise
            except _DECODE_FAILURES:
                raise Corrupt(what) from None

        return process


class UtcDateTime(_Checked, TypeDecorator[datetime]):
    """An aware UTC datetime: ``timestamptz`` on PostgreSQL, sortable ISO text
    on SQLite.  Naive values are taken to be UTC already."""

    impl = DateTime(timezone=True)
    cache_ok = True
    what = "a time that is not a time from 1900 to 9000"
    # (datetime, its SQLite text): replaced whole, so threads never see half
    _last_text: tuple[datetime | None, str] = (None, "")

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name != "sqlite":
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        # A batch binds the same instant many times over (a lead's three
        # times, its audit entries' times): the last one's text is kept.
        last = self._last_text
        if last[0] is value:
            return last[1]
        utc = value
        if utc.tzinfo is not UTC:
            utc = utc.replace(tzinfo=UTC) if utc.tzinfo is None else utc.astimezone(UTC)
        text = utc.isoformat(timespec="microseconds")
        self._last_text = (value, text)
        return text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        if not MIN_TIME <= value < MAX_TIME:
            raise Corrupt(self.what)  # saleflow writes none: later arithmetic would overflow
        return cast(datetime, value)


class JsonDoc(_Checked, TypeDecorator[Any]):
    """JSON; ``jsonb`` on PostgreSQL so reports can index and group by a field.
    The PostgreSQL type is imported only when a PostgreSQL database is used.
    What saleflow stores is an object of plain values (text, numbers,
    booleans, null); anything else is `Corrupt`."""

    impl = JSON
    cache_ok = True
    what = "fields that are not a JSON object of plain values"

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, dict) or not all(
            isinstance(key, str) and (item is None or isinstance(item, str | int | float | bool))
            for key, item in value.items()
        ):
            raise Corrupt(self.what)
        return value

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


# Identifiers compare byte-wise on both backends, so "id order" (and keyset
# pagination) is the same on SQLite and PostgreSQL whatever the server locale.
def _key() -> TypeEngine[str]:
    return Text().with_variant(Text(collation="C"), "postgresql")


class StoredJson(_Checked, TypeDecorator[Any]):
    """JSON saleflow wrote (a journal entry's data): one that does not
    parse, or is not an object, is `Corrupt`."""

    impl = JSON
    cache_ok = True
    what = "a journal entry whose data is not a JSON object"

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if not isinstance(value, dict):
            raise Corrupt(self.what)
        return value


_Serial = BigInteger().with_variant(Integer(), "sqlite")  # INTEGER PRIMARY KEY is the rowid on SQLite

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

flows = Table(
    "flows",
    metadata,
    Column("name", _key(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content_hash", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("path", Text, nullable=False),
    Column("deployed_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("name", "version"),
    UniqueConstraint("name", "content_hash"),
)

leads = Table(
    "leads",
    metadata,
    Column("id", _key(), primary_key=True),
    Column("flow", _key(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("stage", Text, nullable=False),
    Column("fields", JsonDoc, nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("entered_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("revision", Integer, nullable=False),
    # When the lead's time-dependent conditions could next change (SPEC §8,
    # saleflow/due.py); NULL: never.  Written with every change to the lead.
    Column("due_at", UtcDateTime, nullable=True),
    # Keyset pages by flow, and by flow and stage, in id order (migration 0004).
    Index(None, "flow", "id"),
    Index(None, "flow", "stage", "id"),
    # The leads due at a time, of all flows or of one (migration 0006).
    Index(None, "due_at", "id"),
    Index(None, "flow", "due_at", "id"),
)

events = Table(
    "events",
    metadata,
    Column("id", _Serial, primary_key=True, autoincrement=True),
    Column("lead_id", _key(), ForeignKey("leads.id"), nullable=False),
    Column("name", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("channel", Text),
    Column("content", Text),
    Column("count", Integer, nullable=False),
    Column("cycle", Integer, nullable=False),
    Index(None, "lead_id", "cycle"),
)

# The journal (SPEC §6, docs/journal.md): every change to a lead, appended,
# hash-chained per lead; `seq` is the global position.  Never updated or
# deleted (`audit rekey` re-seals hashes, nothing else).  On PostgreSQL `seq`
# comes from the sequence `journal_seq` before an entry is hashed; on SQLite
# the writer (one at a time) counts on from the largest.
journal = Table(
    "journal",
    metadata,
    Column("seq", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("lead_id", _key(), nullable=False),
    Column("lead_seq", Integer, nullable=False),
    Column("entry", Text, nullable=False),
    Column("kind", Text),
    Column("from_stage", Text),
    Column("stage", Text, nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text),
    Column("flow", _key(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("data", StoredJson, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    UniqueConstraint("lead_id", "lead_seq"),
    Index(None, "flow", "stage", "at"),
)

JOURNAL_SEQUENCE = "journal_seq"

# Which key sealed the journal (`journal.key_fingerprint`): one row.  A
# writer with another key is refused rather than mixing seals in one chain;
# `audit rekey` moves the journal to a new key.
journal_seal = Table(
    "journal_seal",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("fingerprint", Text, nullable=False),
)

waiting = Table(
    "waiting",
    metadata,
    Column("lead_id", _key(), ForeignKey("leads.id"), primary_key=True),
    Column("flow", _key(), nullable=False),
    Column("stage", Text, nullable=False),
    Column("score", Float, nullable=False),
    Column("since", UtcDateTime, nullable=False),
    Index(None, "flow", "stage", "score"),
)

sla_breaches = Table(
    "sla_breaches",
    metadata,
    Column("lead_id", _key(), ForeignKey("leads.id"), nullable=False),
    Column("flow", _key(), nullable=False),
    Column("stage", Text, nullable=False),
    Column("cycle", Integer, nullable=False),
    Column("entered_at", UtcDateTime, nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("detected_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("lead_id", "stage", "cycle", "entered_at"),
    Index(None, "flow", "stage", "detected_at"),
)

# -- the HTTP service (saleflow/service, migration 0002) ----------------------

# API tokens: only a hash of each secret is stored.  A revoked token keeps
# its row, so that its name (the actor of what it wrote) is never reused.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", _key(), primary_key=True),
    Column("scope", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    UniqueConstraint("hash"),
)

# Idempotency keys of POST requests, per token: written in the transaction
# of the change they guard; `body` is the first answer, kept for replays.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner", _key(), nullable=False),
    Column("key", _key(), nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("status", Integer, nullable=False),
    Column("body", Text),
    Column("created_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("owner", "key"),
)

# -- webhooks (saleflow/store/hooks.py, migration 0005, docs/webhooks.md) -----

# One row per webhook.  `secret_env` is the NAME of the environment variable
# holding the signing secret, never the secret.  `cursor`: every entry at or
# below it that matches the filters is queued (or was delivered already).
webhooks = Table(
    "webhooks",
    metadata,
    Column("name", _key(), primary_key=True),
    Column("url", Text, nullable=False),
    Column("flow", _key()),
    Column("kinds", Text),  # comma-separated kinds of entry; NULL: every kind
    Column("stages", Text),  # JSON list of stage names; NULL: every stage
    Column("secret_env", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("cursor", BigInteger, nullable=False),
)

# The entries a webhook still owes, one row each.  Per (hook, lead) the live
# rows (failed_at NULL) form a queue delivered in order: exactly one of them,
# the head, has `next_at` set (when it is due); the others wait behind it.
# A row given up after 24 hours keeps failed_at (`webhook failures`) until
# `webhook retry` re-queues it.  A worker claims a head with a lease
# (lease_owner, lease_until on the wall clock) so that no other sends it.
webhook_queue = Table(
    "webhook_queue",
    metadata,
    Column("hook", _key(), ForeignKey("webhooks.name"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("lead_id", _key(), nullable=False),
    Column("queued_at", UtcDateTime, nullable=False),
    Column("next_at", UtcDateTime),
    Column("attempts", Integer, nullable=False),
    Column("first_failed_at", UtcDateTime),
    Column("last_attempt_at", UtcDateTime),
    Column("last_error", Text),
    Column("failed_at", UtcDateTime),
    Column("lease_owner", Text),
    Column("lease_until", UtcDateTime),
    PrimaryKeyConstraint("hook", "seq"),
    Index(None, "hook", "lead_id", "seq"),
    Index(None, "hook", "next_at"),
    Index(None, "hook", "failed_at"),
)
