"""Alembic environment for saleflow.

`saleflow.store` passes an open connection, already inside the transaction
that holds the migration lock, as ``config.attributes["connection"]``: the
whole upgrade then commits or rolls back as one.  Run by hand (``alembic``
with ``script_location = saleflow:migrations`` and ``sqlalchemy.url``, or
``SALEFLOW_DB``), it opens its own connection the same way the store does.
"""

from __future__ import annotations

import os

from alembic import context

from saleflow.records import DEFAULT_URL
from saleflow.store.connect import make_engine, parse_url
from saleflow.store.schema import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite needs batch mode to alter tables
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SALEFLOW_DB", DEFAULT_URL)
    context.configure(url=str(parse_url(url)), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        url = config.get_main_option("sqlalchemy.url") or os.environ.get("SALEFLOW_DB", DEFAULT_URL)
        engine = make_engine(parse_url(url))
        try:
            with engine.begin() as conn:
                _run(conn)
        finally:
            engine.dispose()
