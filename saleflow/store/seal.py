"""Which key seals a store's journal: `Seal`, the check of a store's key
against the fingerprint in `journal_seal`, and the one sentence that refuses
a key of another fingerprint (`wrong_key_message`).

Layer 3, part of the store: used by `SqlTransaction` at its first write of
journal entries and by `SqlStore` for `audit verify`.
"""

from __future__ import annotations

from typing import Any

from ..errors import WrongKey
from ..journal import key_fingerprint

# The one row of `journal_seal`.
SEAL_ROW = 1
_SEAL_READ = "SELECT fingerprint FROM journal_seal WHERE id = 1"
_SEAL_CLAIM = "INSERT INTO journal_seal (id, fingerprint) VALUES (1, %s) ON CONFLICT (id) DO NOTHING"


class Seal:
    """Which key seals a store's journal, checked against the store's key.

    `journal_seal` holds the key's fingerprint (`key_fingerprint`).  A
    write with a key of another fingerprint is refused (`WrongKey`) rather
    than mixing seals in one chain.  A database without the row has not
    been sealed yet: the first write claims it for its key.

    Checked once per store, at its first write of journal entries, not at
    every transaction: the row changes only by `audit rekey`, which must
    run with the writers stopped (a process that stays open across a
    rekey keeps the key it checked; it is refused at its next open)."""

    __slots__ = ("checked", "fingerprint", "where")

    def __init__(self, key: bytes | None, where: str) -> None:
        self.fingerprint = key_fingerprint(key)
        self.where = where
        self.checked = False

    def check_writing(self, cur: Any, pg: bool) -> None:
        """In a write transaction: claim the row if there is none, refuse a
        write with another key.  `cur` is a driver cursor."""
        claim = _SEAL_CLAIM if pg else _SEAL_CLAIM.replace("%s", "?")
        # ON CONFLICT DO NOTHING: two first writers at once both succeed,
        # and both read the row the first one committed.
        cur.execute(claim, (self.fingerprint,))
        cur.execute(_SEAL_READ)
        row = cur.fetchone()
        self.refuse_other(None if row is None else row[0])
        self.checked = True

    def refuse_other(self, sealed: str | None, reading: bool = False) -> None:
        """Raise `WrongKey` if `sealed` (a fingerprint, None: not sealed
        yet) is not this store's key's.  `reading`: for `audit verify`,
        whose user may be right about the key."""
        if sealed is None or sealed == self.fingerprint:
            return
        message = wrong_key_message(self.where, sealed, self.fingerprint)
        if reading:
            # journal_seal is a guard against mistakes, not a seal itself:
            # whoever can write the journal can write it too.
            message += (
                "; if SALEFLOW_AUDIT_KEY is right as it is, the journal was re-sealed or its "
                "seal changed behind saleflow's back"
            )
        raise WrongKey(message)


def wrong_key_message(where: str, sealed: str, fingerprint: str) -> str:
    """The one sentence for a journal sealed with another key than ours."""
    unkeyed = key_fingerprint(None)
    if sealed == unkeyed:
        return (
            f"the journal of {where} is sealed without a key, but SALEFLOW_AUDIT_KEY is set: unset it, "
            "or move the journal to this key with `saleflow audit rekey`"
        )
    if fingerprint == unkeyed:
        return (
            f"the journal of {where} is sealed with a key, but SALEFLOW_AUDIT_KEY is not set: set it to "
            "the key the journal was sealed with"
        )
    return (
        f"the journal of {where} is sealed with another key: set SALEFLOW_AUDIT_KEY to the key it "
        "was sealed with, or move it to this key with `saleflow audit rekey`"
    )
