"""The once-built encoders write exactly what `json` writes, and the audit
hash written key by key is the hash of the canonical payload."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saleflow.jsontext import canonical, compact
from saleflow.records import AuditEntry

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),  # NaN and infinities too: JSON's extension, as `json` writes them
    st.text(),
    st.dates(),  # no JSON type: written as str()
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(documents)
def test_canonical_is_sorted_ascii_json(value: object) -> None:
    assert canonical(value) == json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@given(documents)
def test_compact_is_unicode_json_without_spaces(value: object) -> None:
    assert compact(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def test_a_date_is_written_as_its_text() -> None:
    assert canonical({"b": date(2026, 1, 2), "a": 1}) == '{"a":1,"b":"2026-01-02"}'


@given(
    lead_id=st.text(min_size=1),
    seq=st.integers(min_value=1, max_value=10**9),
    from_stage=st.none() | st.text(),
    to_stage=st.text(),
    kind=st.sampled_from(["create", "advance", "skip", "recycle", "exit", "force", "import", "migrate"]),
    actor=st.text(),
    reason=st.none() | st.text(),
    at=st.datetimes(min_value=datetime(1, 1, 2), timezones=st.just(UTC)),
    version=st.integers(min_value=1),
    cycle=st.integers(min_value=1),
    values=st.dictionaries(st.text(max_size=10), scalars, max_size=5),
)
def test_audit_hash_is_the_hash_of_the_canonical_payload(**fields: object) -> None:
    entry = AuditEntry.sealed(**fields, flow="f", prev_hash="a" * 64)
    expected = hashlib.sha256(canonical(entry.payload()).encode("utf-8")).hexdigest()
    assert entry.hash == entry.compute_hash() == expected


def test_the_hash_of_a_known_entry_never_changes() -> None:
    """Databases written by earlier versions must still verify: the hash of
    this entry as saleflow 0.1 computed it."""
    entry = AuditEntry.sealed(
        lead_id="lead-1",
        seq=2,
        from_stage="inquiry",
        to_stage="engaged",
        kind="advance",
        actor="ops",
        reason=None,
        at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=5),
        flow="x_education",
        version=1,
        cycle=1,
        values={"total_visits": 5, "tags": "Ringing", "converted": False},
        prev_hash="0" * 64,
    )
    assert entry.hash == "df7adae3edfc6005b4d5ad1d97f5223fa2ef4b70647b8e7e771cd5e0ce8d3934"


def test_values_of_unexpected_types_hash_as_their_canonical_payload() -> None:
    """Entries built by hand (a test, a script) may hold an int id or a bool
    counter; the key-by-key text is only a faster way to the same hash."""
    for odd in ({"lead_id": 7}, {"seq": True}, {"actor": None}, {"version": 2.0}):
        fields = {
            "lead_id": "l",
            "seq": 1,
            "from_stage": None,
            "to_stage": "a",
            "kind": "create",
            "actor": "ops",
            "reason": None,
            "at": datetime(2026, 1, 1, tzinfo=UTC),
            "flow": "f",
            "version": 1,
            "cycle": 1,
            "values": {},
            "prev_hash": "0" * 64,
        }
        entry = AuditEntry.sealed(**{**fields, **odd})
        assert entry.hash == hashlib.sha256(canonical(entry.payload()).encode()).hexdigest()


def test_json_columns_are_written_without_driver_warnings(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """psycopg caches a JSON dumper per function and warns (and leaks a
    class per call) when given a closure; the store's encoder is an object."""
    from pathlib import Path

    from saleflow import Engine

    flow = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"
    with caplog.at_level(logging.WARNING), Engine.open(flow, db=db_url) as engine:
        engine.add_lead("a", company="Ünïcode GmbH", employees=800)
        engine.add_lead("b", company="Other", employees=5)
        assert engine.lead("a").fields["company"] == "Ünïcode GmbH"
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_sqlite_stores_the_gate_reads_as_the_text_that_was_hashed(sqlite_url: str) -> None:
    import sqlite3
    from pathlib import Path

    from saleflow import Engine

    flow = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"
    with Engine.open(flow, db=sqlite_url) as engine:
        engine.add_lead("a", company="Ünïcode GmbH", email="a@x.example", employees=800)
        engine.record("a", "inbound_question")
        entries = engine.history("a")
    stored = (
        sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        .execute('SELECT "values", hash FROM audit WHERE lead_id = ? ORDER BY seq', ("a",))
        .fetchall()
    )
    moved = [(text, digest) for (text, digest), entry in zip(stored, entries, strict=True) if entry.values]
    assert moved  # some move read a gate
    for (text, digest), entry in zip(stored, entries, strict=True):
        assert json.loads(text) == entry.values
        assert digest == entry.hash == entry.compute_hash()
    assert all(text == canonical(json.loads(text)) for text, _ in moved)
