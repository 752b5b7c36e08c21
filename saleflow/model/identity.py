"""A flow's identity: a hash of what it means, not of how it is written.

Layer 1.  SPEC §7: "a version number means one content", and tests,
comments and layout are not part of that content.  The identity is a hash
of a canonical form of the parsed `Flow`: every field of every model node
that takes part in equality (so no spans, path, source text or test blocks),
with numbers normalised (`2.0 days` is `2 days`, `48 hours` is `2 days`).
The flow's name and version are part of it, so one version of one flow
has exactly one identity, and `deploy` can tell "already deployed" from
"changed without raising the version".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from typing import Any

from .flow import Flow

# Marks an identity in the flows table's content_hash column; databases
# written before identities existed hold a hash of the raw source there.
PREFIX = "m1:"


def identity(flow: Flow) -> str:
    """The identity of `flow`: `m1:` and a SHA-256 of its canonical form."""
    text = json.dumps(canonical(flow), ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(source: str) -> str:
    """The hash of a flow's raw text: what databases written before flow
    identities hold for their deployed flows."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def is_identity(content_hash: str) -> bool:
    """Whether a stored content_hash is an identity (not a raw-source hash)."""
    return content_hash.startswith(PREFIX)


def canonical(value: Any) -> Any:
    """`value` as plain JSON data: a dataclass becomes its class name and its
    compared fields, tuples become lists, whole floats become ints."""
    if is_dataclass(value) and not isinstance(value, type):
        body = {f.name: canonical(getattr(value, f.name)) for f in fields(value) if f.compare and f.init}
        return [type(value).__name__, body]
    if isinstance(value, (tuple, list)):
        return [canonical(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return str(value)
