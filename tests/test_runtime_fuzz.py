"""The runtime under attack (issue 8): hypothesis throws huge numbers, odd
unicode, NUL bytes, lone surrogates and far dates at the Python API and the
CLI.  Whatever it throws, the answer is a result or one `SaleflowError`
(one `error: …` line and exit 2 or 3 on the command line), never another
exception, and a refused call changes nothing.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import SaleflowError
from saleflow.limits import MAX_TIME, MIN_TIME

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
FUZZ = settings(
    max_examples=int(os.environ.get("SALEFLOW_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not os.environ.get("SALEFLOW_FUZZ_EXAMPLES"),
)

# Text from every corner: NUL, lone surrogates (a command line that was not
# UTF-8), formula starters, long runs, astral characters.
odd_char = st.one_of(
    st.characters(codec=None, categories=None),
    st.sampled_from(["\x00", "\udcff", "\ud800", "=", "-", "\r", "\t", "\u2028", "😀", "'"]),
)
odd_text = st.one_of(
    st.text(odd_char, max_size=20),
    st.builds(lambda c, n: c * n, st.sampled_from(["9", "x", "\x00", "é"]), st.integers(250, 5000)),
)
huge_int = st.one_of(
    st.integers(),
    st.sampled_from([2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**18, 10**19, 10**400]),
)
number_text = st.one_of(
    huge_int.map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e309", "-1e309", "nan", "1_000", "0x10", "9" * 4301, "-" + "9" * 4301, "1e18", "1.5"]),
)
any_value = st.one_of(odd_text, number_text, huge_int, st.floats(), st.booleans(), st.none())
far_time = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]),
    ),
    st.sampled_from([MIN_TIME, MAX_TIME, MAX_TIME - timedelta(microseconds=1), MIN_TIME - timedelta(1)]),
)
time_text = st.one_of(
    far_time.map(lambda t: t.isoformat()),
    st.sampled_from(
        ["9999-12-31", "9999-12-31T23:59:59.999999Z", "0001-01-01", "+10000-01-01", "2024-13-01"]
    ),
    odd_text,
)
FIELDS = ["email", "company", "employees", "industry", "budget", "authority", "need", "timeframe_days"]


def _state(engine: Engine, lead_id: str) -> Any:
    lead = engine.store.get_lead(lead_id)
    return lead, engine.store.journal(lead_id), engine.store.events_of(lead_id)


@pytest.fixture
def engine(db_url: str) -> Any:
    with Engine.open(THE_MODEL, db=db_url, now=T0, actor="fuzz") as found:
        found.add_lead("acme", email="cto@acme.example", employees=800)
        yield found


@FUZZ
@given(field=st.sampled_from(FIELDS), value=any_value, at=st.one_of(st.none(), far_time, time_text))
def test_api_set_takes_or_refuses(engine: Engine, field: str, value: Any, at: Any) -> None:
    before = _state(engine, "acme")
    try:
        engine.set("acme", {field: value}, at=at)
    except SaleflowError as err:
        assert "\n" not in str(err)
        assert _state(engine, "acme") == before
    assert engine.lead("acme").fields is not None  # still readable


@FUZZ
@given(
    lead_id=odd_text,
    values=st.dictionaries(st.sampled_from(FIELDS), any_value, max_size=3),
    at=st.one_of(st.none(), far_time),
)
def test_api_add_lead_takes_or_refuses(engine: Engine, lead_id: str, values: dict[str, Any], at: Any) -> None:
    try:
        engine.add_lead(lead_id, at=at, fields=values)
    except SaleflowError as err:
        assert "\n" not in str(err)
        return
    view = engine.lead(lead_id)  # what was stored reads back
    assert view.id == lead_id
    engine.tick()
    engine.history(lead_id)


@FUZZ
@given(
    channel=st.one_of(st.none(), odd_text),
    content=st.one_of(st.none(), odd_text),
    count=huge_int,
    reason=odd_text,
    version=huge_int,
)
def test_api_events_moves_and_migrations(
    engine: Engine, channel: Any, content: Any, count: int, reason: str, version: int
) -> None:
    before = _state(engine, "acme")
    for call in (
        lambda: engine.record("acme", "web_visit", channel=channel, content=content, count=count),
        lambda: engine.advance("acme", to="lost", force=True, reason=reason),
        lambda: engine.migrate("acme", version=version),
    ):
        try:
            call()
        except SaleflowError as err:
            assert "\n" not in str(err)
            assert _state(engine, "acme") == before
        before = _state(engine, "acme")


COMMANDS = st.one_of(
    st.tuples(st.just("show"), odd_text),
    st.tuples(st.just("history"), odd_text),
    st.tuples(st.just("lead"), st.just("add"), odd_text),
    st.tuples(
        st.just("lead"),
        st.just("set"),
        st.just("acme"),
        st.builds("{}={}".format, st.sampled_from(FIELDS), number_text | odd_text),
    ),
    st.tuples(st.just("lead"), st.just("migrate"), st.just("acme"), st.just("--version"), number_text),
    st.tuples(st.just("event"), st.just("acme"), st.just("web_visit"), st.just("--count"), number_text),
    st.tuples(st.just("event"), st.just("acme"), odd_text, st.just("--channel"), odd_text),
    st.tuples(st.just("event"), st.just("acme"), st.just("web_visit"), st.just("--at"), time_text),
    st.tuples(st.just("report"), st.just("--until"), time_text),
    st.tuples(
        st.just("report"),
        st.just("--since"),
        time_text,
        st.just("--format"),
        st.sampled_from(["csv", "json", "html", "table"]),
    ),
    st.tuples(st.just("leads"), st.just("--stage"), odd_text),
    st.tuples(
        st.just("advance"),
        st.just("acme"),
        st.just("--to"),
        odd_text,
        st.just("--force"),
        st.just("--reason"),
        odd_text,
    ),
)


@FUZZ
@given(args=COMMANDS, now=st.one_of(st.just(T0.isoformat()), time_text))
def test_cli_answers_in_one_sentence(engine: Engine, db_url: str, args: tuple[str, ...], now: str) -> None:
    result = CliRunner().invoke(main, ["--db", db_url, "--now", now, *args], catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1, 2, 3), (result.exit_code, result.output)
    if result.exit_code in (2, 3):
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
