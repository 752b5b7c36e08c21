"""Storage for the HTTP service: API tokens and idempotency keys.

The service (`saleflow.service`) keeps two kinds of rows of its own beside
the engine's: a hash of every API token, and the idempotency keys of POST
requests with their first answer.  They live here, in the store layer (the
only one that knows SQLAlchemy), apart from `sql.py`, which is the engine's.
An idempotency key is claimed inside the transaction of the change it
guards (`claim_key`, called through `Engine.alongside`), so the change and
the key commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from ..errors import BadInput, NotFound
from ..records import Lead, Store
from .connect import describe, parse_url, translate
from .schema import api_tokens, idempotency_keys, leads
from .sql import SqlStore
from .statements import LEAD_COLUMNS
from .transaction import SqlTransaction

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A stored API token, without its secret (only its hash is stored)."""

    name: str
    scope: str
    hash: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A claimed idempotency key: what the request was (a fingerprint of its
    method, path and body), the answer's status, and its body once written."""

    fingerprint: str
    status: int
    body: str | None


def _sql(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError("the service's tables need the SQL store")
    return store


def _write(store: Store, run: Callable[[Connection], T]) -> T:
    """`run` in one write transaction; database failures become saleflow errors."""
    try:
        with _sql(store).engine.begin() as conn:
            return run(conn)
    except DBAPIError as exc:
        raise translate(exc, describe(parse_url(store.url))) from exc


def _read(store: Store, run: Callable[[Connection], T]) -> T:
    try:
        with _sql(store).engine.connect() as conn:
            return run(conn)
    except DBAPIError as exc:
        raise translate(exc, describe(parse_url(store.url))) from exc


# -- tokens -------------------------------------------------------------------


def add_token(store: Store, name: str, scope: str, token_hash: str, at: datetime) -> None:
    """Store a new token's hash; `BadInput` when the name was ever used."""
    T_ = api_tokens.c

    def run(conn: Connection) -> bool:
        if conn.execute(select(T_.name, T_.revoked_at).where(T_.name == name)).first() is not None:
            return False
        conn.execute(insert(api_tokens).values(name=name, scope=scope, hash=token_hash, created_at=at))
        return True

    if not _write(store, run):
        raise BadInput(
            f'a token named "{name}" exists or existed (names stay unique: they are the actors '
            "of what their tokens wrote); choose another name"
        )


def list_tokens(store: Store) -> list[TokenRow]:
    stmt = select(api_tokens).order_by(api_tokens.c.name)
    return _read(store, lambda conn: [TokenRow(*row) for row in conn.execute(stmt)])


def token_by_hash(store: Store, token_hash: str) -> TokenRow | None:
    """The live (not revoked) token with this hash."""
    T_ = api_tokens.c
    stmt = select(api_tokens).where(T_.hash == token_hash, T_.revoked_at.is_(None))
    row = _read(store, lambda conn: conn.execute(stmt).first())
    return None if row is None else TokenRow(*row)


def revoke_token(store: Store, name: str, at: datetime) -> None:
    """Revoke a live token; `NotFound` when there is none by that name."""
    T_ = api_tokens.c
    stmt = (
        update(api_tokens)
        .where(T_.name == name, T_.revoked_at.is_(None))
        .values(revoked_at=at)
        .returning(T_.name)
    )
    if _write(store, lambda conn: conn.execute(stmt).first()) is None:
        raise NotFound(f'there is no live token named "{name}"')


def touch_token(store: Store, name: str, at: datetime) -> None:
    """Record that the token was used at `at`."""
    stmt = update(api_tokens).where(api_tokens.c.name == name).values(last_used_at=at)
    _write(store, lambda conn: conn.execute(stmt))


# -- idempotency keys ---------------------------------------------------------


def find_key(store: Store, owner: str, key: str) -> KeyRow | None:
    K = idempotency_keys.c
    stmt = select(K.fingerprint, K.status, K.body).where(K.owner == owner, K.key == key)
    row = _read(store, lambda conn: conn.execute(stmt).first())
    return None if row is None else KeyRow(row[0], int(row[1]), row[2])


class KeyTaken(Exception):
    """Another request with the same idempotency key committed first: the
    transaction rolls back, and the caller answers with that request's answer."""


def claim_key(tx: Any, owner: str, key: str, fingerprint: str, status: int, at: datetime) -> None:
    """Claim `key` inside the engine's transaction `tx`; `KeyTaken` when a
    concurrent request holds it.  ON CONFLICT DO NOTHING: a duplicate waits
    for the first request's transaction and then inserts nothing, without
    aborting a PostgreSQL transaction with an error."""
    if not isinstance(tx, SqlTransaction):
        raise TypeError("idempotency keys need the SQL store's transaction")
    conn = tx.connection
    values: dict[str, Any] = {
        "owner": owner,
        "key": key,
        "fingerprint": fingerprint,
        "status": status,
        "created_at": at,
    }
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert  # type: ignore[assignment]
    stmt = (
        dialect_insert(idempotency_keys)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(idempotency_keys.c.key)  # rowcount is not reliable here on every driver
    )
    if conn.execute(stmt).first() is None:
        raise KeyTaken(key)


def finish_key(store: Store, owner: str, key: str, body: str) -> None:
    """Keep the first answer's body for replays (after the change committed)."""
    K = idempotency_keys.c
    stmt = update(idempotency_keys).where(K.owner == owner, K.key == key).values(body=body)
    _write(store, lambda conn: conn.execute(stmt))


# -- a page of leads ----------------------------------------------------------


def page_leads(
    store: Store,
    *,
    flow: str | None,
    stages: list[str] | None,
    after: str | None,
    limit: int,
) -> list[Lead]:
    """At most `limit` leads in id order after the id `after` (keyset
    pagination: a page costs the same wherever it is), of a flow, in stages."""
    if stages is not None and not stages:
        return []
    stmt = select(*LEAD_COLUMNS).order_by(leads.c.id).limit(limit)
    if after is not None:
        stmt = stmt.where(leads.c.id > after)
    if flow is not None:
        stmt = stmt.where(leads.c.flow == flow)
    if stages is not None:
        stmt = stmt.where(leads.c.stage.in_(stages))
    return _read(store, lambda conn: [Lead(*row) for row in conn.execute(stmt)])
