"""Anchors and keys: what a hash chain alone cannot show.

Layer 4.  Each lead's journal is a hash chain (`saleflow.journal`), and
`audit verify` recomputes it; but whoever can write to the database can
recompute a chain after an edit, and can delete a lead whole (its row, its
entries, its events) leaving no chain to break.  Two measures close those
gaps:

- **The key.**  With ``SALEFLOW_AUDIT_KEY`` set, every hash is an
  HMAC-SHA256 under it, so an edited chain cannot be re-sealed without the
  key.  `rekey` moves a journal from one key (or none) to another.
- **The anchor.**  `compute_anchor` gives a short digest of the whole
  journal up to a position: a Merkle root over every lead's newest entry,
  with the counts.  Kept outside the database, it shows that nothing it
  covers was changed or removed since (`check_anchor`), key or no key.

The Merkle tree (the definition an anchor's ``root`` means; it must never
change, or old anchors stop matching):

- one leaf per lead that has an entry at or below the anchor's ``seq``, for
  the lead's newest such entry (the largest ``lead_seq``), in ``lead_id``
  order (code point order, which is the byte order of UTF-8, as the store
  sorts);
- leaf = SHA-256(0x00 || UTF-8 of the canonical JSON text
  ``[lead_id, lead_seq, hash]``), e.g. ``["a",7,"9f…"]`` (`jsontext.canonical`:
  no spaces, ASCII with ``\\u`` escapes);
- node = SHA-256(0x01 || left || right), over the 32-byte digests: the
  prefixes keep a leaf from ever reading as a node (domain separation);
- each level pairs its nodes from the left; an odd last node is promoted to
  the next level unchanged;
- the root of no leaves is SHA-256 of nothing.

`MerkleRoot` computes this root incrementally, holding one subtree root per
level (O(log N) memory): the tree above is exactly the perfect subtrees of
the binary digits of N, largest first, folded from the right.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, text, tuple_

from ..errors import BadInput, Rejected, WrongKey
from ..journal import GENESIS_HASH, JournalEntry, key_fingerprint
from ..jsontext import canonical
from ..records import Store
from ..store.schema import journal
from ..store.sql import SqlStore
from ..store.transaction import JOURNAL_LOCK
from ..wording import plural
from .audit import FlowLookup, Problem, check_chain

OLD_KEY_VARIABLE = "SALEFLOW_AUDIT_OLD_KEY"

LEAF = b"\x00"
NODE = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

# What an anchor file may hold: one short line of JSON.
MAX_ANCHOR_BYTES = 4096
MAX_POSITION = 2**63 - 1  # a PostgreSQL bigint
ANCHOR_KEYS = ("seq", "leads", "entries", "root", "sealed")
_ROOT = re.compile(r"[0-9a-f]{64}")
_SEALED = re.compile(r"none|hmac-sha256:[0-9a-f]{32}")


# --------------------------------------------------------------------------
# The Merkle root
# --------------------------------------------------------------------------


def leaf_hash(lead_id: str, lead_seq: int, hash: str) -> bytes:
    """The leaf of a lead whose newest entry is (`lead_seq`, `hash`)."""
    return hashlib.sha256(LEAF + canonical([lead_id, lead_seq, hash]).encode("utf-8")).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE + left + right).digest()


class MerkleRoot:
    """The Merkle root of leaves added one at a time, in O(log N) memory.

    The stack holds the roots of perfect subtrees of strictly decreasing
    height (one per binary digit of the count so far); adding a leaf merges
    equal heights like a binary counter.  The root folds the stack from the
    right, which is the level-by-level tree with odd nodes promoted."""

    __slots__ = ("_stack", "count")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []
        self.count = 0

    def add(self, leaf: bytes) -> None:
        stack = self._stack
        height, node = 0, leaf
        while stack and stack[-1][0] == height:
            node = node_hash(stack.pop()[1], node)
            height += 1
        stack.append((height, node))
        self.count += 1

    def root(self) -> bytes:
        stack = self._stack
        if not stack:
            return EMPTY_ROOT
        node = stack[-1][1]
        for _, left in reversed(stack[:-1]):
            node = node_hash(left, node)
        return node


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    tree = MerkleRoot()
    for leaf in leaves:
        tree.add(leaf)
    return tree.root()


# --------------------------------------------------------------------------
# Anchors
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anchor:
    """A digest of the journal up to position `seq`: how many leads and
    entries it held, the Merkle root of their newest entries, and the
    fingerprint of the key that sealed them."""

    seq: int
    leads: int
    entries: int
    root: str
    sealed: str

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in ANCHOR_KEYS}

    def line(self) -> str:
        """The anchor as one line of JSON (what `audit anchor` prints)."""
        return json.dumps(self.to_json())


def parse_anchor(text: str, name: str = "this text") -> Anchor:
    """An anchor from its JSON text; `BadInput`, one sentence, if it is not one."""
    what = f"{name} is not an anchor of `saleflow audit anchor`"
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise BadInput(f"{what} (not JSON)") from None
    if not isinstance(value, dict):
        raise BadInput(f"{what} (not a JSON object)")
    keys = set(value)
    if keys != set(ANCHOR_KEYS):
        missing = [k for k in ANCHOR_KEYS if k not in keys]
        if missing:
            raise BadInput(f"{what} (it has no {', '.join(missing)})")
        raise BadInput(f"{what} (it has keys other than {', '.join(ANCHOR_KEYS)})")
    for key in ("seq", "leads", "entries"):
        number = value[key]
        if type(number) is not int or not 0 <= number <= MAX_POSITION:
            raise BadInput(f"{what} (its {key} is not a whole number from 0 to {MAX_POSITION})")
    root, sealed = value["root"], value["sealed"]
    if not isinstance(root, str) or not _ROOT.fullmatch(root):
        raise BadInput(f"{what} (its root is not 64 lowercase hexadecimal digits)")
    if not isinstance(sealed, str) or not _SEALED.fullmatch(sealed):
        raise BadInput(f"{what} (its sealed is not a key fingerprint)")
    return Anchor(value["seq"], value["leads"], value["entries"], root, sealed)


def _no_constant(name: str) -> Any:
    raise ValueError(name)  # NaN, Infinity: not JSON


def read_anchor(path: str | os.PathLike[str]) -> Anchor:
    """The anchor in the file `path` (`BadInput` if it cannot be read or is
    not one)."""
    shown = str(path)
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_ANCHOR_BYTES + 1)
    except OSError as err:
        raise BadInput(f"cannot read the anchor {shown}: {err.strerror or err}") from None
    except ValueError:  # a NUL in the path
        raise BadInput("cannot read the anchor: its file name is not a path") from None
    name = f"the file {shown}"
    if len(data) > MAX_ANCHOR_BYTES:
        raise BadInput(f"{name} is not an anchor of `saleflow audit anchor` (too long)")
    try:
        text = data.decode("utf-8-sig")  # an editor's byte order mark is not part of the anchor
    except UnicodeDecodeError:
        raise BadInput(f"{name} is not an anchor of `saleflow audit anchor` (not UTF-8 text)") from None
    if "\x00" in text:
        raise BadInput(f"{name} is not an anchor of `saleflow audit anchor` (it holds a NUL)")
    return parse_anchor(text, name)


def _sql_store(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError("anchors and keys need a SqlStore")
    return store


def _heads(store: SqlStore, upto: int, chunk: int) -> Iterator[tuple[str, int, str, int]]:
    """(lead_id, lead_seq, hash, entries) of each lead's newest entry at or
    below position `upto`, in lead_id order: the entries are read by
    (lead_id, lead_seq), a chunk per query (keyset), the smallest columns
    only."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    J = journal.c
    columns = select(J.lead_id, J.lead_seq, J.hash).where(J.seq <= bindparam("upto"))
    first = columns.order_by(J.lead_id, J.lead_seq).limit(bindparam("chunk"))
    after = tuple_(bindparam("after_lead", type_=J.lead_id.type), bindparam("after_seq"))
    following = first.where(tuple_(J.lead_id, J.lead_seq) > after)
    params: dict[str, Any] = {"upto": upto, "chunk": chunk}
    current: tuple[str, int, str] | None = None
    count = 0
    stmt = first
    while True:
        with store.read() as conn:
            rows = conn.execute(stmt, params).all()
        for lead_id, lead_seq, hash in rows:
            if current is not None and lead_id != current[0]:
                yield (*current, count)
                count = 0
            current = (lead_id, lead_seq, hash)
            count += 1
        if len(rows) < chunk:
            break
        stmt = following
        params["after_lead"], params["after_seq"] = rows[-1][0], rows[-1][1]
    if current is not None:
        yield (*current, count)


def compute_anchor(store: Store, upto: int | None = None, *, chunk: int = 1000) -> Anchor:
    """The anchor of the journal as of position `upto` (default: its
    published position, `high_water`): entries above it, written later, do
    not change it."""
    sql_store = _sql_store(store)
    seq = store.high_water() if upto is None else upto
    sealed = sql_store.sealed_with() or key_fingerprint(store.key)
    tree = MerkleRoot()
    entries = 0
    for lead_id, lead_seq, hash, count in _heads(sql_store, seq, chunk):
        tree.add(leaf_hash(lead_id, lead_seq, hash))
        entries += count
    return Anchor(seq, tree.count, entries, tree.root().hex(), sealed)


def _differences(now: Anchor, then: Anchor) -> str:
    """E.g. "1 lead and 7 entries fewer than anchored"."""
    fewer, more = [], []
    for have, had, word, words in (
        (now.leads, then.leads, "lead", "leads"),
        (now.entries, then.entries, "entry", "entries"),
    ):
        if have < had:
            fewer.append(plural(had - have, word, words))
        elif have > had:
            more.append(plural(have - had, word, words))
    said = [
        f"{' and '.join(counts)} {how} than anchored"
        for counts, how in ((fewer, "fewer"), (more, "more"))
        if counts
    ]
    return ", ".join(said)


def check_anchor(
    store: Store, anchor: Anchor, *, chunk: int = 1000, chains_fail: bool = False
) -> list[Problem]:
    """How the journal up to the anchor's position differs from it, as
    problems of no lead (`Problem.lead_id` None); none if it matches.
    `chains_fail`: `audit verify` named leads, which the message points to."""
    problems: list[Problem] = []
    high = store.high_water()
    if anchor.seq > high:
        problems.append(
            Problem(
                None,
                f"the anchor is at position {anchor.seq} but the journal ends at {high}: "
                "entries at its end were deleted, or the anchor is of another database",
            )
        )
    now = compute_anchor(store, anchor.seq, chunk=chunk)
    if now == anchor:
        return problems
    head = f"the journal up to position {anchor.seq} no longer matches the anchor: "
    if now.sealed != anchor.sealed:
        problems.append(
            Problem(
                None,
                head + f"the anchor was taken while it was sealed with {_sealed_text(anchor.sealed)}, "
                f"and it is now sealed with {_sealed_text(now.sealed)} (an anchor taken before "
                "`saleflow audit rekey` cannot be checked after it: take a new anchor after each rekey)",
            )
        )
        return problems
    said = _differences(now, anchor)
    if now.leads < anchor.leads:
        guess = "a lead deleted whole?"
    elif now.leads > anchor.leads:
        guess = "a lead inserted?"
    elif now.entries < anchor.entries:
        guess = "entries deleted?"
    elif now.entries > anchor.entries:
        guess = "entries inserted?"
    else:
        said = (
            f"the same {plural(now.leads, 'lead')} and "
            f"{plural(now.entries, 'entry', 'entries')}, but other chain heads"
        )
        guess = "a chain was re-sealed or rewritten"
    see = "; see the leads above" if chains_fail else ""
    problems.append(Problem(None, f"{head}{said} ({guess}{see})"))
    return problems


def _sealed_text(fingerprint: str) -> str:
    return "no key" if fingerprint == key_fingerprint(None) else f"the key {fingerprint}"


# --------------------------------------------------------------------------
# Rekey
# --------------------------------------------------------------------------


def old_key_from_environment() -> bytes | None:
    """The key a journal is sealed with before `audit rekey`:
    ``SALEFLOW_AUDIT_OLD_KEY`` as UTF-8, None when unset or empty."""
    value = os.environ.get(OLD_KEY_VARIABLE)
    return value.encode("utf-8") if value else None


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """What `rekey` did."""

    leads: int
    entries: int
    sealed: str


_SEAL_SET = text(
    "INSERT INTO journal_seal (id, fingerprint) VALUES (1, :fingerprint) "
    "ON CONFLICT (id) DO UPDATE SET fingerprint = excluded.fingerprint"
)
_SEAL_GET = text("SELECT fingerprint FROM journal_seal WHERE id = 1")
SHOWN_LEADS = 5  # leads a refused rekey names


def _wrong_old_key(where: str, sealed: str, old_key: bytes | None) -> str:
    if sealed == key_fingerprint(None):
        fix = f"it is sealed without a key: unset {OLD_KEY_VARIABLE}"
    elif old_key is None:
        fix = f"it is sealed with a key, but {OLD_KEY_VARIABLE} is not set: set it to that key"
    else:
        fix = f"it is sealed with another key than {OLD_KEY_VARIABLE}: set it to the key it is sealed with"
    return f"audit rekey changed nothing in the journal of {where}: {fix}"


def rekey(store: Store, flows: FlowLookup, old_key: bytes | None, *, chunk: int = 1000) -> Rekeyed:
    """Move the journal from `old_key` (None: it had none) to the store's key.

    In one transaction: every chain is checked under the old key (a rekey
    must not launder an edit: refused, naming leads, if any fails — and then
    nothing has changed), each entry is re-sealed in order (its `prev_hash`
    and `hash`, nothing else), and `journal_seal` takes the new key's
    fingerprint.  Streams: one lead's entries in memory at a time.

    Run it with the writers stopped: a process that stays open keeps the
    key it checked at its first write (see `saleflow.store.seal.Seal`)."""
    sql_store = _sql_store(store)
    new_key = store.key
    J = journal.c
    first = select(*journal.c).order_by(J.lead_id, J.lead_seq).limit(bindparam("chunk"))
    after = tuple_(bindparam("after_lead", type_=J.lead_id.type), bindparam("after_seq"))
    following = first.where(tuple_(J.lead_id, J.lead_seq) > after)
    # The only UPDATE of journal rows anywhere in saleflow: a rekey
    # re-seals hashes; nothing else in the journal is ever updated or
    # deleted.
    reseal = (
        journal.update()
        .where(J.seq == bindparam("b_seq"))
        .values(prev_hash=bindparam("b_prev_hash"), hash=bindparam("b_hash"))
    )
    failing: list[str] = []
    leads = entries = 0
    with sql_store.transaction() as tx:
        conn = tx.connection
        if conn.dialect.name == "postgresql":
            # Wait for writers between drawing positions and committing,
            # and hold new ones off until this commits.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({JOURNAL_LOCK})")
        sealed = conn.execute(_SEAL_GET).scalar()
        if sealed is not None and sealed != key_fingerprint(old_key):
            raise WrongKey(_wrong_old_key(sql_store.where, sealed, old_key))

        def by_lead() -> Iterator[list[JournalEntry]]:
            params: dict[str, Any] = {"chunk": chunk}
            stmt = first
            group: list[JournalEntry] = []
            while True:
                rows = conn.execute(stmt, params).all()
                for row in rows:
                    entry = JournalEntry(*row)
                    if group and entry.lead_id != group[0].lead_id:
                        yield group
                        group = []
                    group.append(entry)
                if len(rows) < chunk:
                    break
                stmt = following
                params["after_lead"], params["after_seq"] = rows[-1].lead_id, rows[-1].lead_seq
            if group:
                yield group

        for group in by_lead():
            leads += 1
            entries += len(group)
            problems, _ = check_chain(group, flows, old_key)
            if problems:
                failing.append(group[0].lead_id)
                continue
            if failing:
                continue  # refused in the end: re-sealing more is wasted
            prev_hash = GENESIS_HASH
            for entry in group:
                entry.seal(entry.seq, entry.lead_seq, prev_hash, new_key)
                prev_hash = entry.hash
            conn.execute(
                reseal, [{"b_seq": e.seq, "b_prev_hash": e.prev_hash, "b_hash": e.hash} for e in group]
            )
        if failing:
            shown = ", ".join(f'"{lead_id}"' for lead_id in failing[:SHOWN_LEADS])
            more = f" and {len(failing) - SHOWN_LEADS} more" if len(failing) > SHOWN_LEADS else ""
            which = "the lead" if len(failing) == 1 else f"{len(failing)} leads"
            raise Rejected(
                f"audit rekey changed nothing: the chain of {which} {shown}{more} does not verify under "
                "the old key (a rekey must not launder an edit; `saleflow audit verify` with the old key "
                "says what is wrong)"
            )
        fingerprint = key_fingerprint(new_key)
        conn.execute(_SEAL_SET, {"fingerprint": fingerprint})
    sql_store.forget_seal()
    return Rekeyed(leads, entries, fingerprint)


__all__ = [
    "ANCHOR_KEYS",
    "OLD_KEY_VARIABLE",
    "Anchor",
    "MerkleRoot",
    "Rekeyed",
    "check_anchor",
    "compute_anchor",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "old_key_from_environment",
    "parse_anchor",
    "read_anchor",
    "rekey",
]
