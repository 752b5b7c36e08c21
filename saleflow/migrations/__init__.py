"""Alembic migrations of the saleflow schema, shipped with the package.

`saleflow.store` runs them on first use of a database (script location
``saleflow:migrations``).  To write a new one, bump `SCHEMA_HEAD` and
`KNOWN_REVISIONS` in `saleflow/store/schema.py` along with it.
"""
