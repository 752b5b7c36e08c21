"""Journal entries: the hash written key by key is the hash of the canonical
payload, keyed with HMAC when there is a key, and SQLite stores the data as
the very text that was hashed."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

from hypothesis import given
from hypothesis import strategies as st

from saleflow import Engine
from saleflow.journal import ENTRY_KINDS, JournalEntry, key_fingerprint
from saleflow.jsontext import canonical
from saleflow.records import MoveKind

THE_MODEL = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text())


def sealed(key: bytes | None = None, **fields: Any) -> JournalEntry:
    seq, lead_seq, prev_hash = fields.pop("seq"), fields.pop("lead_seq"), fields.pop("prev_hash")
    entry = JournalEntry(seq=0, lead_seq=0, **fields)
    entry.seal(seq, lead_seq, prev_hash, key)
    return entry


entries = st.fixed_dictionaries(
    {
        "seq": st.integers(min_value=1, max_value=2**62),
        "lead_id": st.text(min_size=1),
        "lead_seq": st.integers(min_value=1, max_value=10**9),
        "entry": st.sampled_from(ENTRY_KINDS),
        "kind": st.none() | st.sampled_from(get_args(MoveKind)),
        "from_stage": st.none() | st.text(),
        "stage": st.text(),
        "cycle": st.integers(min_value=1),
        "at": st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC)),
        "recorded_at": st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC)),
        "actor": st.text(),
        "reason": st.none() | st.text(),
        "flow": st.text(min_size=1),
        "version": st.integers(min_value=1),
        "data": st.dictionaries(st.text(max_size=10), scalars | st.lists(scalars, max_size=2), max_size=5),
        "prev_hash": st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    }
)


@given(entries)
def test_the_hash_is_the_hash_of_the_canonical_payload(fields: dict[str, Any]) -> None:
    entry = sealed(**fields)
    expected = hashlib.sha256(canonical(entry.payload()).encode("utf-8")).hexdigest()
    assert entry.text() == canonical(entry.payload())
    assert entry.hash == entry.compute_hash() == expected


@given(entries, st.binary(min_size=1, max_size=64))
def test_with_a_key_the_hash_is_an_hmac_of_the_same_text(fields: dict[str, Any], key: bytes) -> None:
    entry = sealed(key, **fields)
    text = canonical(entry.payload()).encode("utf-8")
    assert entry.hash == hmac.new(key, text, hashlib.sha256).hexdigest()
    assert entry.hash != entry.compute_hash(None)
    assert entry.compute_hash(key + b"x") != entry.hash


def test_the_hash_of_a_known_entry_never_changes() -> None:
    """Databases written now must verify with every later saleflow: the
    hash of this entry as the first journal computed it."""
    entry = sealed(
        seq=17,
        lead_id="lead-1",
        lead_seq=2,
        entry="moved",
        kind="advance",
        from_stage="inquiry",
        stage="engaged",
        cycle=1,
        at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=5),
        recorded_at=datetime(2026, 1, 2, tzinfo=UTC),
        actor="ops",
        reason=None,
        flow="x_education",
        version=1,
        data={"values": {"total_visits": 5, "tags": "Ringing", "converted": False}},
        prev_hash="0" * 64,
    )
    assert entry.hash == "b8d9105e9d1fa8fc9f94876fecb3ad89806dc54fc1f8fe9944638f76f271c64d"
    keyed = sealed(b"k", **_fields(entry)).hash
    assert keyed == "e9b45dcdc1983783673483946e714ee538dd533ed6e4d3d8074739dba97959f9"


def _fields(entry: JournalEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "lead_id": entry.lead_id,
        "lead_seq": entry.lead_seq,
        "entry": entry.entry,
        "kind": entry.kind,
        "from_stage": entry.from_stage,
        "stage": entry.stage,
        "cycle": entry.cycle,
        "at": entry.at,
        "recorded_at": entry.recorded_at,
        "actor": entry.actor,
        "reason": entry.reason,
        "flow": entry.flow,
        "version": entry.version,
        "data": entry.data,
        "prev_hash": entry.prev_hash,
    }


def test_values_of_unexpected_types_hash_as_their_canonical_payload() -> None:
    """Entries built by hand (a test, a script) may hold an int id or a bool
    counter; the key-by-key text is only a faster way to the same hash."""
    base = {
        "seq": 1,
        "lead_id": "l",
        "lead_seq": 1,
        "entry": "created",
        "kind": "create",
        "from_stage": None,
        "stage": "a",
        "cycle": 1,
        "at": datetime(2026, 1, 1, tzinfo=UTC),
        "recorded_at": datetime(2026, 1, 1, tzinfo=UTC),
        "actor": "ops",
        "reason": None,
        "flow": "f",
        "version": 1,
        "data": {},
        "prev_hash": "0" * 64,
    }
    for odd in ({"lead_id": 7}, {"lead_seq": True}, {"actor": None}, {"version": 2.0}, {"entry": 3}):
        entry = sealed(**{**base, **odd})
        assert entry.hash == hashlib.sha256(canonical(entry.payload()).encode()).hexdigest()


def test_a_key_fingerprint_tells_keys_apart_without_holding_them() -> None:
    assert key_fingerprint(None) == "none"
    one, other = key_fingerprint(b"secret"), key_fingerprint(b"secret2")
    assert one != other and one == key_fingerprint(b"secret")
    assert "secret" not in one


def test_sqlite_stores_the_data_as_the_text_that_was_hashed(sqlite_url: str) -> None:
    with Engine.open(THE_MODEL, db=sqlite_url) as engine:
        engine.add_lead("a", company="Ünïcode GmbH", email="a@x.example", employees=800)
        engine.set("a", budget=5000)
        engine.record("a", "inbound_question")
        entries = engine.history("a", moves_only=False)
    stored = (
        sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        .execute("SELECT data, hash FROM journal WHERE lead_id = ? ORDER BY lead_seq", ("a",))
        .fetchall()
    )
    assert {e.entry for e in entries} >= {"created", "set", "event", "moved"}
    for (text, digest), entry in zip(stored, entries, strict=True):
        assert json.loads(text) == entry.data
        assert text == canonical(json.loads(text))
        assert digest == entry.hash == entry.compute_hash()
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert any(e.values for e in entries if e.entry == "moved")  # some move read a gate
