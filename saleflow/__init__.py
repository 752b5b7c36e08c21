"""saleflow: a declarative workflow engine for B2B sales processes.

The public API for embedding (SPEC §5)::

    from saleflow import Engine
    engine = Engine.open("flows/the_model.flow", db="sqlite:///leads.db")

Names are imported on first use, so that `saleflow check` does not pay for
the database layer it never touches.  Type checkers read the same names from
the `TYPE_CHECKING` block below, so `Engine` is `Engine` to them, not `Any`;
a test keeps that block and `_EXPORTS` in step.

`__version__` is the one source of the version: the build reads it from
here (pyproject.toml, `[tool.setuptools.dynamic]`) into the metadata that
`saleflow --version` prints.
"""

from __future__ import annotations

import logging
from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library logs and lets the application decide where logs go.
logging.getLogger("saleflow").addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .errors import BadInput, Conflict, FlowInvalid, NotFound, Rejected, SaleflowError, StoreError
    from .importing import BadRow, BadRows, ImportResult
    from .journal import JournalEntry
    from .records import AuditEntry, Blocker, Lead, LeadView, MoveVerdict
    from .runtime.engine import Deployment, Engine

_EXPORTS = {
    "Engine": "runtime.engine",
    "Deployment": "runtime.engine",
    "ImportResult": "importing",
    "BadRow": "importing",
    "BadRows": "importing",
    "AuditEntry": "records",
    "JournalEntry": "journal",
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

__all__ = [
    "AuditEntry",
    "BadInput",
    "BadRow",
    "BadRows",
    "Blocker",
    "Conflict",
    "Deployment",
    "Engine",
    "FlowInvalid",
    "ImportResult",
    "JournalEntry",
    "Lead",
    "LeadView",
    "MoveVerdict",
    "NotFound",
    "Rejected",
    "SaleflowError",
    "StoreError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'saleflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
