"""The only place that knows SQLAlchemy: tables, transactions, locking.

`open_store(url)` returns a `SqlStore`, which implements the `Store`
protocol of `saleflow.records` on SQLite (the embedded default) or
PostgreSQL, creating or migrating the schema (Alembic, shipped in
`saleflow.migrations`) on first use.
"""

from .schema import KNOWN_REVISIONS, SCHEMA_HEAD, Corrupt
from .sql import SqlStore, open_store
from .transaction import SqlTransaction

__all__ = [
    "KNOWN_REVISIONS",
    "SCHEMA_HEAD",
    "Corrupt",
    "SqlStore",
    "SqlTransaction",
    "open_store",
]
