"""Journal entries: everything that happens to a lead, in order, sealed.

Layer 1.  Every change to a lead is one `JournalEntry`, appended in the
transaction that makes the change (SPEC §6): ``created``, ``set``,
``event``, ``moved``, ``migrated``, ``sla_breach``.  An entry is sealed by a
hash over all of its content, its global position `seq` and the hash of the
lead's previous entry, so one chain per lead covers field changes and events
as much as moves.  With a key (``SALEFLOW_AUDIT_KEY``) the hash is
HMAC-SHA256, and an edited chain cannot be re-sealed without the key.

The store assigns `seq`, `lead_seq` and `prev_hash` when it writes an entry
(see `saleflow.store.transaction`); `seal` is then the only way a hash is made, and
`audit verify` recomputes it with the same function.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .jsontext import canonical, quote

# The kinds of entry (`JournalEntry.entry`), in the glossary's words.
ENTRY_KINDS: tuple[str, ...] = ("created", "set", "event", "moved", "migrated", "sla_breach")

GENESIS_HASH = "0" * 64

KEY_VARIABLE = "SALEFLOW_AUDIT_KEY"


@dataclass(slots=True)
class JournalEntry:
    """One entry of a lead's journal.  The attributes are the `journal`
    table's columns, in order (`JournalEntry(*row)` reads a row back).

    - `seq`: global position, strictly increasing (the change feed's cursor);
    - `lead_seq`: 1, 2, 3… per lead;
    - `entry`: the kind of entry, one of `ENTRY_KINDS`;
    - `kind`: the kind of move of SPEC §3 (`records.MoveKind`) for ``created`` (create or
      import), ``moved`` and ``migrated`` (migrate) entries, None for the
      others: an entry with a `kind` is a §3 audit entry, and reads as one
      did before the journal (`history` keeps SPEC §4's keys);
    - `from_stage`: where a move started (None for everything else);
    - `stage`: the lead's stage after the entry;
    - `cycle`: the lead's cycle the entry belongs to;
    - `at`: the effective time (``--at`` may back-date it);
    - `recorded_at`: when it was written (the engine's clock, never ``--at``);
    - `data`: what else the entry says, by kind (`docs/journal.md`).

    Read-only by convention, not frozen: an import builds tens of thousands,
    and a frozen dataclass costs several times as much to build."""

    seq: int
    lead_id: str
    lead_seq: int
    entry: str
    kind: str | None
    from_stage: str | None
    stage: str
    cycle: int
    at: datetime
    recorded_at: datetime
    actor: str
    reason: str | None
    flow: str
    version: int
    data: Mapping[str, Any]
    prev_hash: str = ""
    hash: str = ""
    # `canonical(data)` once made: the hash covers it and SQLite stores it.
    # Not a column; None on entries read back.
    data_text: str | None = field(default=None, repr=False, compare=False)

    @property
    def to_stage(self) -> str:
        """Where a move ended: the lead's stage after the entry."""
        return self.stage

    @property
    def values(self) -> Mapping[str, Any]:
        """The values a move's gate read (empty for other entries); for a
        migration, the version it came from, as §3's audit entries said."""
        if self.entry == "migrated" and "from_version" in self.data:
            return {"from_version": self.data["from_version"]}
        values = self.data.get("values")
        return values if isinstance(values, Mapping) else {}

    def canonical_data(self) -> str:
        text = self.data_text
        if text is None:
            data = self.data
            text = self.data_text = canonical(data if type(data) is dict else dict(data)) if data else "{}"
        return text

    def payload(self) -> dict[str, Any]:
        """The sealed content: everything but the hash itself."""
        return {
            "seq": self.seq,
            "lead_id": self.lead_id,
            "lead_seq": self.lead_seq,
            "entry": self.entry,
            "kind": self.kind,
            "from": self.from_stage,
            "stage": self.stage,
            "cycle": self.cycle,
            "at": self.at.isoformat(),
            "recorded_at": self.recorded_at.isoformat(),
            "actor": self.actor,
            "reason": self.reason,
            "flow": self.flow,
            "version": self.version,
            "data": dict(self.data),
            "prev_hash": self.prev_hash,
        }

    def text(self) -> str:
        """`canonical(self.payload())`, written key by key in sorted order:
        a third cheaper than building the payload and encoding it
        (`tests/test_journal.py` proves them equal); a value of an
        unexpected type takes the general way."""
        try:
            return self._canonical_text()
        except TypeError:
            return canonical(self.payload())

    def compute_hash(self, key: bytes | None = None) -> str:
        """SHA-256 of `text()`, or HMAC-SHA256 under `key`."""
        data = self.text().encode("utf-8")
        if key is None:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(key, data, hashlib.sha256).hexdigest()

    def seal(self, seq: int, lead_seq: int, prev_hash: str, key: bytes | None = None) -> None:
        """Give the entry its place and its hash (the store calls this)."""
        self.seq = seq
        self.lead_seq = lead_seq
        self.prev_hash = prev_hash
        self.hash = self.compute_hash(key)

    def _canonical_text(self) -> str:
        seq, lead_seq, version, cycle = self.seq, self.lead_seq, self.version, self.cycle
        if (
            type(seq) is not int
            or type(lead_seq) is not int
            or type(version) is not int
            or type(cycle) is not int
        ):
            raise TypeError("a counter that is not an int")
        return _CANONICAL_ENTRY % (
            quote(self.actor),
            _quoted_time(self.at),
            cycle,
            self.canonical_data(),
            quote(self.entry),
            quote(self.flow),
            "null" if self.from_stage is None else quote(self.from_stage),
            "null" if self.kind is None else quote(self.kind),
            quote(self.lead_id),
            lead_seq,
            quote(self.prev_hash),
            "null" if self.reason is None else quote(self.reason),
            _quoted_time(self.recorded_at),
            seq,
            quote(self.stage),
            version,
        )


# `canonical(payload)` of an entry, its keys in sorted order; each %s is a
# JSON text (a quoted string, null, an object), each %d an int.
_CANONICAL_ENTRY = (
    '{"actor":%s,"at":%s,"cycle":%d,"data":%s,"entry":%s,"flow":%s,"from":%s,"kind":%s,'
    '"lead_id":%s,"lead_seq":%d,"prev_hash":%s,"reason":%s,"recorded_at":%s,"seq":%d,"stage":%s,'
    '"version":%d}'
)

# The last time quoted, with its text: a lead's entries, and all the leads
# of an import without times, share one instant.  Replaced whole (a tuple),
# so a thread never sees a half-written pair.
_last_time: tuple[datetime | None, str] = (None, "")


def _quoted_time(at: datetime) -> str:
    global _last_time
    last = _last_time
    if last[0] is at:
        return last[1]
    text = quote(at.isoformat())
    _last_time = (at, text)
    return text


def key_from_environment() -> bytes | None:
    """The sealing key: ``SALEFLOW_AUDIT_KEY`` as UTF-8, or None when unset
    or empty."""
    value = os.environ.get(KEY_VARIABLE)
    return value.encode("utf-8") if value else None


def key_fingerprint(key: bytes | None) -> str:
    """What the database keeps to know which key sealed its journal, without
    keeping the key: an HMAC of a fixed text (``"none"`` without a key)."""
    if key is None:
        return "none"
    return "hmac-sha256:" + hmac.new(key, b"saleflow journal key", hashlib.sha256).hexdigest()[:32]


__all__ = [
    "ENTRY_KINDS",
    "GENESIS_HASH",
    "KEY_VARIABLE",
    "JournalEntry",
    "key_fingerprint",
    "key_from_environment",
]
