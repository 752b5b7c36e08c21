"""saleflow: a declarative workflow engine for B2B sales processes.

The public API for embedding (SPEC §5)::

    from saleflow import Engine
    engine = Engine.open("flows/the_model.flow", db="sqlite:///leads.db")

Names are imported on first use, so that `saleflow check` does not pay for
the database layer it never touches.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Engine": "engine",
    "Deployment": "engine",
    "ImportResult": "importer",
    "BadRow": "importer",
    "BadRows": "importer",
    "AuditEntry": "records",
    "Blocker": "records",
    "Lead": "records",
    "LeadView": "records",
    "MoveVerdict": "records",
    "BadInput": "errors",
    "Conflict": "errors",
    "FlowInvalid": "errors",
    "NotFound": "errors",
    "Rejected": "errors",
    "SaleflowError": "errors",
    "StoreError": "errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'saleflow' has no attribute {name!r}")
