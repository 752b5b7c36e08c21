"""The once-built encoders write exactly what `json` writes (the journal's
hashes are tested in test_journal.py)."""

from __future__ import annotations

import json
import logging
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from saleflow.jsontext import canonical, compact

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
