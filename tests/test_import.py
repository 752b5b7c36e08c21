"""`saleflow import` (SPEC §4): CSV rows become leads and their history.

Small hand-written files in `tmp_path`, through the API and the CLI, on
SQLite and PostgreSQL; the real X Education file (9,237 leads) when it is
present.  Every refusal is checked to leave the database unchanged, row for
row, in every table.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import dump

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import BadInput, NotFound
from saleflow.importing import SHOWN_BAD_ROWS, BadRows, ImportResult, import_csv, normalise
from saleflow.language.parse import parse_flow

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

SHOP = """\
flow shop version 1 "Import test"

field email        text
field employees    int
field rate         number
field budget       money
field vip          bool  default false
field signed_on    date
field tier         one of [bronze, silver, gold]
field lead_origin  text
field owner        text

team marketing "Marketing" {
  stage new    initial
  stage known  when email is set
  stage mql    when employees >= 100
}

team sales "Sales" {
  stage sql   when budget >= 1000
  stage deal  when owner is set  capacity 1
  stage won   manual  when vip
}

stage lost  final  when tier == bronze
"""

OTHER = """\
flow other
field email text
team t "T" {
  stage start initial
  stage done when email is set
}
"""


def shop(db_url: str, **kwargs: Any) -> Engine:
    return Engine.open(parse_flow(SHOP, "shop.flow"), db=db_url, now=T0, actor="tester", **kwargs)


def write(tmp_path: Path, text_: str, name: str = "leads.csv") -> Path:
    path = tmp_path / name
    path.write_text(text_, encoding="utf-8")
    return path


def history(engine: Engine, lead_id: str) -> list[tuple[str | None, str, str, str]]:
    return [(e.from_stage, e.to_stage, e.kind, e.at.isoformat()) for e in engine.history(lead_id)]


# ---------------------------------------------------------------------------
# rows, types, mapping
# ---------------------------------------------------------------------------


def test_names_normalise() -> None:
    assert normalise("Lead Origin") == "lead_origin"
    assert normalise("  What is your current occupation ") == "what_is_your_current_occupation"
    assert normalise("Score (%)") == "score"
    assert normalise("TotalVisits") == "totalvisits"


def test_rows_become_typed_leads_and_columns_map_themselves(db_url: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ID,Email,Employees,rate,Budget,VIP,Signed On,Tier,Lead Origin,Notes\n"
        "a,a@x.example,250,2.67,1500.50,Yes,2024-03-01,gold,API,call back\n"
        "b,,12,0,,No,,Select,Landing Page Submission,\n"
        "c,c@x.example,1_000,3,99,true,,silver,,\n"
        "d,d@x.example,7,1.5,,1,,,,\n",
    )
    engine = shop(db_url)
    result = engine.import_csv(path, flow="shop", id_column="ID")
    assert isinstance(result, ImportResult)
    assert (result.rows, result.imported, result.created, result.updated, result.bad) == (4, 4, 4, 0, 0)
    assert result.ignored == ("Notes",)
    assert result.columns == {
        "Email": "email",
        "Employees": "employees",
        "rate": "rate",
        "Budget": "budget",
        "VIP": "vip",
        "Signed On": "signed_on",
        "Tier": "tier",
        "Lead Origin": "lead_origin",
    }
    a = engine.lead("a")
    assert a.fields["email"] == "a@x.example"
    assert a.fields["employees"] == 250 and isinstance(a.fields["employees"], int)
    assert a.fields["rate"] == 2.67
    assert a.fields["budget"] == 1500.5
    assert a.fields["vip"] is True
    assert a.fields["signed_on"] == "2024-03-01"
    assert a.fields["tier"] == "gold"
    assert a.fields["lead_origin"] == "API"
    b = engine.lead("b")
    assert b.fields["email"] is None and b.fields["budget"] is None and b.fields["tier"] is None  # "Select"
    assert b.fields["vip"] is False and b.fields["rate"] == 0
    assert engine.lead("c").fields["employees"] == 1000 and engine.lead("c").fields["vip"] is True
    assert engine.lead("d").fields["vip"] is True and engine.lead("d").fields["rate"] == 1.5
    # after each row the lead progressed as usual: a reached sql (budget), c mql, d known, b stayed
    assert {x: engine.lead(x).stage for x in "abcd"} == {"a": "sql", "b": "new", "c": "mql", "d": "known"}
    assert [e.kind for e in engine.history("a")] == ["create", "advance", "advance", "advance"]
    assert all(e.at == T0 for e in engine.history("a"))  # no time column: now
    assert engine.verify() == []


def test_enum_values_match_ignoring_case_and_punctuation(sqlite_url: str, tmp_path: Path) -> None:
    """CRM exports write choices as labels ("Gold", "SILVER"); a value that
    reads as exactly one choice is that choice, anything else a bad row."""
    path = write(tmp_path, "id,tier\na,Gold\nb, SILVER \nc,gold-\n")
    engine = shop(sqlite_url)
    engine.import_csv(path, flow="shop", id_column="id")
    assert [engine.lead(x).fields["tier"] for x in "abc"] == ["gold", "silver", "gold"]
    with pytest.raises(BadRows, match="1 bad row"):
        engine.import_csv(write(tmp_path, "id,tier\nd,platinum\n", "bad.csv"), flow="shop", id_column="id")


def test_null_placeholders_are_configurable(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "ID,email,lead_origin\na,N/A,Select\nb, ,n/a\n")
    engine = shop(sqlite_url)
    engine.import_csv(path, flow="shop", id_column="ID", nulls=("N/A",))
    assert engine.lead("a").fields["email"] is None
    assert engine.lead("a").fields["lead_origin"] == "Select"  # no longer a placeholder
    assert engine.lead("b").fields["email"] is None  # blank is always unset
    assert engine.lead("b").fields["lead_origin"] == "n/a"  # placeholders match exactly


def test_map_renames_and_ignores_columns(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "ID,Company Size,email,E-mail address\na,500,old@x.example,new@x.example\n")
    engine = shop(sqlite_url)
    result = engine.import_csv(
        path, flow="shop", id_column="ID", mapping={"Company Size": "employees", "E-mail address": "email"}
    )
    lead = engine.lead("a")
    assert lead.fields["employees"] == 500
    assert lead.fields["email"] == "new@x.example"  # the explicit map wins over "email" mapping itself
    assert result.ignored == ("email",)
    result = engine.import_csv(path, flow="shop", id_column="ID", mapping={"Company Size": ""})
    assert "Company Size" in result.ignored


def test_two_columns_for_one_field_must_be_resolved(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "ID,Lead Origin,lead_origin\na,API,Web\n")
    engine = shop(sqlite_url)
    with pytest.raises(BadInput, match='"Lead Origin" and "lead_origin" both map to the field "lead_origin"'):
        engine.import_csv(path, flow="shop", id_column="ID")
    engine.import_csv(path, flow="shop", id_column="ID", mapping={"lead_origin": ""})
    assert engine.lead("a").fields["lead_origin"] == "API"


def test_existing_leads_are_updated_and_blanks_unset(db_url: str, tmp_path: Path) -> None:
    engine = shop(db_url)
    first = write(tmp_path, "ID,email,employees\na,a@x.example,50\nb,b@x.example,60\n", "one.csv")
    engine.import_csv(first, flow="shop", id_column="ID")
    second = write(tmp_path, "ID,email,employees\na,a@x.example,\nb,b@x.example,120\nc,,\n", "two.csv")
    result = engine.import_csv(second, flow="shop", id_column="ID")
    assert (result.created, result.updated) == (1, 2)
    assert engine.lead("a").fields["employees"] is None
    assert engine.lead("b").stage == "mql"
    # the same file again changes nothing
    again = engine.import_csv(second, flow="shop", id_column="ID")
    assert (again.created, again.updated, again.moves) == (0, 3, 0)
    assert engine.verify() == []


# ---------------------------------------------------------------------------
# history: stage and time columns
# ---------------------------------------------------------------------------


def test_rows_replay_a_history_with_real_dates(db_url: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "id,stage,when,email,budget,vip\n"
        "a,new,2024-01-02T10:00:00Z,,,\n"
        "b,known,2024-01-03,b@x.example,,\n"
        "a,sql,2024-02-01T08:30:00+02:00,a@x.example,,\n"
        "a,won,2024-03-15,a@x.example,,no\n"
        "b,lost,2024-04-01,b@x.example,,\n",
    )
    engine = shop(db_url)
    result = engine.import_csv(path, flow="shop", id_column="id", stage_column="stage", at_column="when")
    assert (result.rows, result.created, result.updated) == (5, 2, 0)
    assert result.placed == 5  # a: new, sql, won; b: known, lost
    assert history(engine, "a") == [
        (None, "new", "import", "2024-01-02T10:00:00+00:00"),
        ("new", "sql", "import", "2024-02-01T06:30:00+00:00"),
        ("sql", "won", "import", "2024-03-15T00:00:00+00:00"),
    ]
    # b's first row says where it stands: it starts there (no pass through "new")
    assert history(engine, "b") == [
        (None, "known", "import", "2024-01-03T00:00:00+00:00"),
        ("known", "lost", "import", "2024-04-01T00:00:00+00:00"),
    ]
    assert engine.history("b")[0].reason == "leads.csv line 3"
    entries = engine.history("a")
    assert entries[1].reason == "leads.csv line 4" and entries[1].actor == "tester"
    lead = engine.lead("a")
    # gates not checked: "sql" wants budget >= 1000 and "won" (manual) wants vip
    assert lead.stage == "won" and lead.fields["vip"] is False
    assert lead.created_at == datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert lead.entered_at == datetime(2024, 3, 15, tzinfo=UTC)
    assert engine.verify() == []


def test_a_lead_progresses_after_its_row(db_url: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "id,stage,at,email,employees,budget\n"
        "a,known,2024-01-01,a@x.example,500,\n"
        "a,,2024-02-01,a@x.example,500,5000\n",
    )
    engine = shop(db_url)
    engine.import_csv(path, flow="shop", id_column="id", stage_column="stage", at_column="at")
    assert history(engine, "a") == [
        (None, "known", "import", "2024-01-01T00:00:00+00:00"),
        ("known", "mql", "advance", "2024-01-01T00:00:00+00:00"),
        ("mql", "sql", "advance", "2024-02-01T00:00:00+00:00"),
    ]


def test_stage_names_match_normalised_and_date_formats(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "id,Stage,Date\na,Known,31/01/2024 14:05\nb,MQL,01/02/2024 00:00\n")
    engine = shop(sqlite_url)
    engine.import_csv(
        path,
        flow="shop",
        id_column="id",
        stage_column="Stage",
        at_column="Date",
        date_format="%d/%m/%Y %H:%M",
    )
    assert engine.lead("a").stage == "known"
    assert engine.lead("a").entered_at == datetime(2024, 1, 31, 14, 5, tzinfo=UTC)
    assert engine.lead("b").stage == "mql"


@pytest.mark.parametrize(
    ("cell", "date_format"),
    [("2024-03-05 14:22 +0900", "%Y-%m-%d %H:%M %z"), ("05/03/2024 05:22 UTC", "%d/%m/%Y %H:%M UTC")],
)
def test_date_formats_with_an_offset_or_zone(
    sqlite_url: str, tmp_path: Path, cell: str, date_format: str
) -> None:
    path = write(tmp_path, f"id,Stage,Date\na,MQL,{cell}\n")
    engine = shop(sqlite_url)
    engine.import_csv(
        path, flow="shop", id_column="id", stage_column="Stage", at_column="Date", date_format=date_format
    )
    assert engine.lead("a").entered_at == datetime(2024, 3, 5, 5, 22, tzinfo=UTC)


def test_map_stage_names_what_the_crms_stage_values_mean(db_url: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "id,Lifecycle Stage,at\n"
        "a,Subscriber,2024-01-01\n"
        "a,Marketing Qualified Lead,2024-01-02\n"
        "b,Other,2024-01-03\n"
        "a,Closed Won,2024-01-04\n",
    )
    engine = shop(db_url)
    result = engine.import_csv(
        path,
        flow="shop",
        id_column="id",
        stage_column="Lifecycle Stage",
        at_column="at",
        stage_map={"Subscriber": "new", "marketing qualified lead": "MQL", "Other": "", "Closed Won": "won"},
    )
    assert (result.bad, result.created) == (0, 2)
    assert [e.to_stage for e in engine.history("a")] == ["new", "mql", "won"]  # the map matches normalised
    assert engine.lead("b").stage == "new"  # "Other" means no stage: created in the initial one
    assert engine.verify() == []


def test_date_fields_read_the_date_format_or_its_date_part(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "id,at,signed_on\na,3/4/2024 2:22 PM,4/5/2024\nb,3/4/2024 2:22 PM,2024-04-06\n")
    engine = shop(sqlite_url)
    engine.import_csv(path, flow="shop", id_column="id", at_column="at", date_format="%m/%d/%Y %I:%M %p")
    assert engine.lead("a").fields["signed_on"] == "2024-04-05"  # the format's date part
    assert engine.lead("b").fields["signed_on"] == "2024-04-06"  # ISO, as always
    assert engine.lead("a").created_at == datetime(2024, 3, 4, 14, 22, tzinfo=UTC)
    # without a time column, --date-format is there for the date fields
    alone = write(tmp_path, "id,signed_on\nc,31/12/2024\n", "alone.csv")
    engine.import_csv(alone, flow="shop", id_column="id", date_format="%d/%m/%Y")
    assert engine.lead("c").fields["signed_on"] == "2024-12-31"


def test_history_across_chunks_and_capacity_on_import(db_url: str, tmp_path: Path) -> None:
    """Chunks of two rows; "deal" holds one lead, so the second waits and
    enters when the first leaves (the buffered writes are flushed before
    any stage count)."""
    rows = ["id,at,owner,budget,stage"]
    for i, lead in enumerate(["a", "b", "c", "a", "b", "c"]):
        rows.append(f"{lead},2024-01-0{i + 1},ann,2000,{'sql' if i < 3 else ''}")
    rows.append("a,2024-01-08,ann,2000,lost")
    path = write(tmp_path, "\n".join(rows) + "\n")
    engine = shop(db_url)
    result = engine.import_csv(
        path, flow="shop", id_column="id", at_column="at", stage_column="stage", chunk=2
    )
    assert result.created == 3
    stages = {x: engine.lead(x).stage for x in "abc"}
    assert stages == {"a": "lost", "b": "deal", "c": "sql"}
    assert [e.kind for e in engine.history("b")][-1] == "advance"
    assert engine.history("b")[-1].reason == "room freed"
    assert engine.verify() == []


def test_rows_of_a_lead_must_run_forward_in_time(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "id,at\na,2024-03-01\nb,2024-01-01\na,2024-02-01\n")
    engine = shop(sqlite_url)
    with pytest.raises(BadRows) as caught:
        engine.import_csv(path, flow="shop", id_column="id", at_column="at")
    (bad,) = caught.value.rows
    assert bad.line == 4 and bad.column == "at"
    assert "older than its row on line 2" in bad.reason


def test_a_history_imported_again_is_refused_and_changes_nothing(db_url: str, tmp_path: Path) -> None:
    """Rows older than what the database holds for a lead would be applied
    after the fact (dated at the lead's last change, replaying moves out of
    final stages): they are bad rows, so importing a file twice is refused
    whole, and an overlapping export imports only its newer rows."""
    first = write(
        tmp_path,
        "id,stage,at\na,known,2024-01-01\na,lost,2024-01-10\nb,known,2024-01-02\n"
        "c,known,2024-01-03\nc,mql,2024-01-03\n",  # c: two moves at one instant
        "one.csv",
    )
    engine = shop(db_url)
    options: dict[str, Any] = {"flow": "shop", "id_column": "id", "stage_column": "stage", "at_column": "at"}
    engine.import_csv(first, **options)
    before = dump(db_url)
    with pytest.raises(BadRows) as caught:
        engine.import_csv(first, **options)
    # a row at the last change itself was imported with it: it would replay c's two moves
    assert [(bad.line, bad.column) for bad in caught.value.rows] == [
        (2, "at"),
        (3, "at"),
        (4, "at"),
        (5, "at"),
        (6, "at"),
    ]
    assert (
        "(2024-01-03T00:00:00+00:00) is no newer than the lead's last change" in caught.value.rows[3].reason
    )
    assert caught.value.rows[0].reason == (
        'this row of lead "a" (2024-01-01T00:00:00+00:00) is older than the lead\'s last change in the '
        "database (2024-01-10T00:00:00+00:00); a lead's history cannot be rewritten (was this file imported "
        "before? --skip-bad FILE sets such rows aside)"
    )
    assert dump(db_url) == before
    # an export overlapping the first: its old rows are set aside, the new ones applied
    overlap = write(
        tmp_path, "id,stage,at\nb,known,2024-01-02\nb,sql,2024-01-20\na,known,2024-01-05\n", "two.csv"
    )
    result = engine.import_csv(overlap, **options, skip_bad=tmp_path / "old.csv")
    assert (result.imported, result.bad) == (1, 2)  # b's row at its last change was imported before
    assert engine.lead("a").stage == "lost" and engine.lead("b").stage == "sql"
    assert history(engine, "a")[-1] == ("known", "lost", "import", "2024-01-10T00:00:00+00:00")
    assert engine.verify() == []


def test_without_a_time_column_rows_older_than_a_leads_last_change_are_refused(
    sqlite_url: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "id,stage,at\na,known,2024-06-01\n")
    engine = shop(sqlite_url)  # now: 2024-05-01
    engine.import_csv(path, flow="shop", id_column="id", stage_column="stage", at_column="at")
    again = write(tmp_path, "id,email\na,a@x.example\n", "again.csv")
    with pytest.raises(BadRows) as caught:
        engine.import_csv(again, flow="shop", id_column="id")
    (bad,) = caught.value.rows
    assert bad.column == "id" and "without --at-column every row happens now" in bad.reason


def test_a_lead_of_another_flow_is_a_bad_row(db_url: str, tmp_path: Path) -> None:
    engine = shop(db_url)
    engine.deploy(parse_flow(OTHER, "other.flow"))
    engine.add_lead("x", flow="other")
    path = write(tmp_path, "id,email\nx,x@x.example\ny,y@x.example\n")
    with pytest.raises(BadRows) as caught:
        engine.import_csv(path, flow="shop", id_column="id")
    assert str(caught.value.rows[0]) == 'line 2, column "id": lead "x" belongs to flow "other", not "shop"'


def test_leads_on_an_older_version_take_the_rows_their_version_can(db_url: str, tmp_path: Path) -> None:
    engine = shop(db_url)
    engine.add_lead("old", email="old@x.example")
    engine.deploy(parse_flow(SHOP.replace("version 1", "version 2") + "field region text\n", "shop.flow"))
    good = write(tmp_path, "id,employees\nold,500\nnew,5\n", "good.csv")
    result = engine.import_csv(good, flow="shop", id_column="id")
    assert (result.created, result.updated) == (1, 1)
    assert (engine.lead("old").version, engine.lead("old").stage) == (1, "mql")
    assert engine.lead("new").version == 2
    bad = write(tmp_path, "id,region\nold,emea\n", "bad.csv")
    with pytest.raises(BadRows) as caught:
        engine.import_csv(bad, flow="shop", id_column="id")
    assert caught.value.rows[0].reason == (
        'lead "old" is on version 1 of flow "shop", which has no field "region" of type text'
    )


def test_progress_is_reported_in_bytes_for_both_passes(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "id,email\n" + "".join(f"l{i},l{i}@x.example\n" for i in range(50)))
    seen: list[int] = []
    shop(sqlite_url).import_csv(path, flow="shop", id_column="id", chunk=7, progress=seen.append)
    assert sum(seen) == 2 * path.stat().st_size
    assert len(seen) == 2 * 8  # a call per chunk and pass


# ---------------------------------------------------------------------------
# bad rows: all or nothing, or --skip-bad
# ---------------------------------------------------------------------------

BAD = (
    "id,employees,tier,vip,stage\n"
    "a,10,gold,yes,\n"
    "b,ten,gold,no,\n"  # line 3: not a number
    "c,10,platinum,no,\n"  # line 4: not in the list
    ",10,gold,no,\n"  # line 5: no id
    "d,10,gold,maybe,\n"  # line 6: not a bool
    "e,2.5,gold,no,\n"  # line 7: not whole
    "f,10,gold,no,limbo\n"  # line 8: no such stage
    "g,10,,no,known\n"
)


def test_bad_rows_are_all_listed_and_nothing_is_written(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    engine = shop(db_url)
    before = dump(db_url)
    with pytest.raises(BadRows) as caught:
        engine.import_csv(path, flow="shop", id_column="id", stage_column="stage")
    err = caught.value
    assert err.count == 6
    assert [(b.line, b.column) for b in err.rows] == [
        (3, "employees"),
        (4, "tier"),
        (5, "id"),
        (6, "vip"),
        (7, "employees"),
        (8, "stage"),
    ]
    assert err.rows[0].reason == 'field "employees" is int; "ten" is not a number'
    assert 'did you mean "gold"' in err.rows[1].reason or "platinum" in err.rows[1].reason
    assert err.rows[5].reason == 'flow "shop" has no stage "limbo"; say which with --map-stage'
    assert "nothing was imported" in err.message
    assert dump(db_url) == before


def test_line_numbers_count_quoted_line_breaks_and_skip_blank_lines(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, 'id,email,employees\r\na,"two\r\nlines",1\r\n\r\nb,x,many\r\n', "crlf.csv")
    engine = shop(sqlite_url)
    with pytest.raises(BadRows) as caught:
        engine.import_csv(path, flow="shop", id_column="id")
    assert [(b.line, b.column) for b in caught.value.rows] == [(5, "employees")]
    engine.import_csv(path, flow="shop", id_column="id", skip_bad=tmp_path / "bad.csv")
    assert engine.lead("a").fields["email"] == "two\r\nlines"


def test_at_most_twenty_bad_rows_are_shown(sqlite_url: str, tmp_path: Path) -> None:
    lines = ["id,employees"] + [f"l{i},x{i}" for i in range(25)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    shop(sqlite_url).close()
    result = CliRunner().invoke(
        main, ["--db", sqlite_url, "import", str(path), "--flow", "shop", "--id-column", "id"]
    )
    assert result.exit_code == 2
    shown = [line for line in result.stderr.splitlines() if ": line " in line]
    assert len(shown) == SHOWN_BAD_ROWS
    assert shown[0].endswith('line 2, column "employees": field "employees" is int; "x0" is not a number')
    assert "… and 5 more bad rows" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert "25 bad rows" in result.stderr
    assert "Traceback" not in result.stderr


def test_skip_bad_imports_the_good_rows_and_writes_the_bad(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, BAD)
    rejects = tmp_path / "rejects.csv"
    engine = shop(db_url)
    result = engine.import_csv(path, flow="shop", id_column="id", stage_column="stage", skip_bad=rejects)
    assert (result.rows, result.imported, result.bad, result.created) == (8, 2, 6, 2)
    assert result.skipped_to == str(rejects)
    assert engine.lead("a").fields["vip"] is True
    assert engine.lead("g").stage == "known"
    with rejects.open(newline="", encoding="utf-8") as handle:
        written = list(csv.reader(handle))
    assert written[0] == ["id", "employees", "tier", "vip", "stage", "reason"]
    assert [row[0] for row in written[1:]] == ["b", "c", "", "d", "e", "f"]
    assert written[1][:5] == ["b", "ten", "gold", "no", ""]
    assert written[1][5] == 'line 3, column "employees": field "employees" is int; "ten" is not a number'
    assert (
        written[6][5]
        == 'line 8, column "stage": flow "shop" has no stage "limbo"; say which with --map-stage'
    )


def test_skip_bad_without_bad_rows_writes_no_file(sqlite_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "id,email\na,a@x.example\n")
    rejects = tmp_path / "rejects.csv"
    result = shop(sqlite_url).import_csv(path, flow="shop", id_column="id", skip_bad=rejects)
    assert result.bad == 0 and result.skipped_to is None and not rejects.exists()


# ---------------------------------------------------------------------------
# file problems: one sentence, exit 2 (3 for an unknown flow or field), no change
# ---------------------------------------------------------------------------

GOOD_HEADER = "id,email,at,stage\n"


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "empty": write(tmp_path, "", "empty.csv"),
        "blank": write(tmp_path, "\n\n", "blank.csv"),
        "no_id": write(tmp_path, "Lead ID,email\na,a@x.example\n", "no_id.csv"),
        "dup": write(tmp_path, "id,email,Email,email\na,b,c,d\n", "dup.csv"),
        "dates": write(tmp_path, GOOD_HEADER + "a,a@x.example,31/01/2024,\nb,,01/02/2024,\n", "dates.csv"),
        "ragged_long": write(
            tmp_path, GOOD_HEADER + "a,a@x.example,2024-01-01,\nb,x,2024-01-01,,extra\n", "l.csv"
        ),
        "ragged_short": write(tmp_path, GOOD_HEADER + "a,a@x.example,2024-01-01,\nb,x\n", "s.csv"),
        "quote": write(tmp_path, GOOD_HEADER + 'a,"a@x.example,2024-01-01,\n', "quote.csv"),
        "stage": write(tmp_path, GOOD_HEADER + "a,a@x.example,2024-01-01,closed\n", "stage.csv"),
        "good": write(tmp_path, GOOD_HEADER + "a,a@x.example,2024-01-01,\n", "good.csv"),
        "semicolons": write(tmp_path, "id;email;at;stage\na;a@x.example;2024-01-01;\n", "semi.csv"),
    }
    latin = tmp_path / "latin1.csv"
    latin.write_bytes(
        (GOOD_HEADER + "a,a@x.example,2024-01-01,\nb,caf\xe9@x.example,2024-01-01,\n").encode("latin-1")
    )
    files["latin1"] = latin
    (tmp_path / "folder.csv").mkdir()
    files["folder"] = tmp_path / "folder.csv"
    files["missing"] = tmp_path / "missing.csv"
    return files


FILE_CASES: dict[str, tuple[str, list[str], int, str]] = {
    # name: (file, extra CLI args, exit code, fragment of the one sentence)
    "missing file": ("missing", [], 2, "missing.csv does not exist"),
    "a folder": ("folder", [], 2, "folder.csv is a folder, not a CSV file"),
    "empty file": ("empty", [], 2, "empty.csv is empty"),
    "only blank lines": ("blank", [], 2, "blank.csv is empty"),
    "no id column": ("no_id", [], 2, 'no_id.csv has no column "id" (--id-column); did you mean "Lead ID"?'),
    "duplicate header": ("dup", [], 2, 'has the column "email" twice in its header (columns 2 and 4)'),
    "wrong date format": ("dates", ["--at-column", "at"], 2, 'no value in column "at"'),
    "wrong --date-format": (
        "good",
        ["--at-column", "at", "--date-format", "%d/%m/%Y"],
        2,
        'matches --date-format "%d/%m/%Y" (line 2 has "2024-01-01")',
    ),
    "invalid --date-format": ("good", ["--at-column", "at", "--date-format", "%Q"], 2, '"%Q" is not a valid'),
    "--date-format alone": (
        "good",
        ["--date-format", "%Y"],
        2,
        "--date-format needs --at-column or a date field",
    ),
    "unknown stage": ("stage", ["--stage-column", "stage"], 2, "1 bad row, so nothing was imported"),
    "not UTF-8": ("latin1", [], 2, "latin1.csv is not UTF-8 text: line 3 has the byte 0xe9"),
    "too many cells": ("ragged_long", [], 2, "l.csv line 3 has 5 cells but the header has 4 columns"),
    "too few cells": ("ragged_short", [], 2, "s.csv line 3 has 2 cells but the header has 4 columns"),
    "separated by semicolons": ("semicolons", [], 2, "its values look separated by semicolons, and saleflow"),
    "unclosed quote": ("quote", [], 2, "quote.csv line 2 is not valid CSV"),
    "unknown stage column": (
        "good",
        ["--stage-column", "Stage "],
        2,
        'no column "Stage" (--stage-column); did you mean "stage"?',
    ),
    "unknown --map-stage stage": (
        "good",
        ["--stage-column", "stage", "--map-stage", "Marketing Qualified=mgl"],
        3,
        'flow "shop" has no stage "mgl" (--map-stage "Marketing Qualified=mgl"); did you mean "mql"?',
    ),
    "%Z in --date-format": (
        "good",
        ["--at-column", "at", "--date-format", "%Y-%m-%d %Z"],
        2,
        "uses %Z, a zone name, which Python cannot turn into an offset",
    ),
    "two stages for one value": (
        "good",
        ["--stage-column", "stage", "--map-stage", "Won=won", "--map-stage", "WON=lost"],
        2,
        '--map-stage gives "Won" and "WON", the same value as the file is read, two stages ("won" and "lost")',
    ),
    "--map-stage alone": ("good", ["--map-stage", "MQL=mql"], 2, "--map-stage needs --stage-column"),
    "bad --map-stage": ("good", ["--stage-column", "stage", "--map-stage", "mql"], 2, "is not VALUE=STAGE"),
    "unknown --map column": ("good", ["--map", "mail=email"], 2, 'no column "mail" (--map)'),
    "unknown --map field": ("good", ["--map", "email=e_mail"], 3, 'flow "shop" has no field "e_mail"'),
    "bad --map": ("good", ["--map", "email"], 2, '--map "email" is not COLUMN=FIELD'),
    "unknown flow": ("good", ["--flow", "nope"], 3, 'flow "nope" is not deployed'),
    "skip-bad onto the input": ("good", ["--skip-bad", "{file}"], 2, "--skip-bad must name another file"),
}


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_file_problems_are_one_sentence_and_change_nothing(db_url: str, tmp_path: Path, name: str) -> None:
    file_key, extra, code, fragment = FILE_CASES[name]
    files = _files(tmp_path)
    engine = shop(db_url)
    engine.import_csv(files["good"], flow="shop", id_column="id")  # something to keep
    engine.close()
    before = dump(db_url)
    path = files[file_key]
    args = ["--db", db_url, "import", str(path), "--id-column", "id"]
    if "--flow" not in extra:
        args += ["--flow", "shop"]
    args += [a.replace("{file}", str(path)) for a in extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and fragment in last, result.stderr
    assert name != "too few cells" or "quoted" not in last  # the comma hint is for too many
    assert result.stdout == ""
    assert dump(db_url) == before


def test_file_problems_through_the_api(sqlite_url: str, tmp_path: Path) -> None:
    files = _files(tmp_path)
    engine = shop(sqlite_url)
    with pytest.raises(BadInput, match="is not UTF-8 text: line 3"):
        engine.import_csv(files["latin1"], flow="shop", id_column="id")
    with pytest.raises(NotFound, match='flow "nope" is not deployed'):
        engine.import_csv(files["good"], flow="nope", id_column="id")
    with pytest.raises(BadInput, match="chunk size"):
        import_csv(engine, files["good"], flow="shop", id_column="id", chunk=0)


# ---------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------


def test_cli_summary_and_json(sqlite_url: str, tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "Customer,E-mail,Size,Stage,When,Remark\n"
        "a,a@x.example,500,,2024-01-05,hi\n"
        "b,Select,,known,2024-01-06,\n",
    )
    flow_file = tmp_path / "shop.flow"
    flow_file.write_text(SHOP, encoding="utf-8")
    args = ["--db", sqlite_url, "--actor", "importer", "import", str(path), "--flow", str(flow_file)]
    args += ["--id-column", "Customer", "--map", "E-mail=email", "--map", "Size=employees"]
    args += ["--stage-column", "Stage", "--at-column", "When"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "rows read        2" in out
    assert "leads created    2" in out
    assert "leads updated    0 (leads that existed before the import)" in out
    assert "moves            2" in out  # a: new -> known -> mql; b starts in "known"
    assert "placed           1 (created in or moved to the stage in the file)" in out
    assert "bad rows         0" in out
    assert "ignored columns  1: Remark" in out
    assert "elapsed" in out
    assert "importing" not in result.output  # no progress bar when not on a terminal
    engine = Engine.open(db=sqlite_url)
    assert engine.lead("a").stage == "mql"
    assert engine.history("b")[-1].actor == "importer"
    # the same history again is refused (its rows are no newer than the leads);
    # into another database, --json gives the summary
    assert CliRunner().invoke(main, args).exit_code == 2
    fresh = ["--db", f"sqlite:///{tmp_path / 'second.db'}", *args[2:]]
    result = CliRunner().invoke(main, [*fresh, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and summary["updated"] == 0 and summary["created"] == 2
    assert summary["columns"] == {"E-mail": "email", "Size": "employees"}
    assert summary["ignored"] == ["Remark"]


# ---------------------------------------------------------------------------
# the real file: 9,237 leads of X Education
# ---------------------------------------------------------------------------

REAL_CANDIDATES = (
    Path("/work/shared/data/x_education_leads.csv"),
    ROOT.parent / "shared" / "data" / "x_education_leads.csv",
)
REAL = next((p for p in REAL_CANDIDATES if p.is_file()), None)


@pytest.mark.skipif(REAL is None, reason="the X Education file (shared/data/x_education_leads.csv) is absent")
def test_the_real_x_education_file(db_url: str) -> None:
    assert REAL is not None
    with REAL.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    from_file = Counter(row["Lead Origin"] for row in rows)
    converted_in_file = sum(row["Converted"] == "1" for row in rows)
    expected = {
        "Landing Page Submission": 4884,
        "API": 3579,
        "Lead Add Form": 718,
        "Lead Import": 55,
        "Quick Add Form": 1,
    }
    assert (len(rows), converted_in_file, dict(from_file)) == (9237, 3559, expected)

    engine = Engine.open(ROOT / "flows" / "x_education.flow", db=db_url, now=T0, actor="tester")
    result = engine.import_csv(
        REAL, flow="x_education", id_column="Prospect ID", mapping={"TotalVisits": "total_visits"}
    )
    assert (result.rows, result.created, result.bad) == (9237, 9237, 0)
    assert "Magazine" in result.ignored and "Lead Origin" not in result.ignored
    leads = list(engine.leads(flow="x_education"))
    assert len(leads) == 9237
    assert sum(lead.fields.get("converted") is True for lead in leads) == 3559
    assert Counter(lead.fields.get("lead_origin") for lead in leads) == expected
    # "Select" is unset, decimals are numbers
    sample = next(lead for lead in leads if lead.id == "2a272436-5132-4136-86fa-dcc88c88f482")
    assert sample.fields["page_views_per_visit"] == 2.5 and sample.fields["total_visits"] == 5
    assert "specialization" not in sample.fields  # "Select"
    # every converted lead reached "enrolled", and only they did
    assert engine.store.count_leads("x_education", "enrolled") == 3559  # type: ignore[attr-defined]


def test_a_utf8_bom_from_excel_is_not_part_of_the_first_column(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffid,email\né,é@x.example\n".encode())
    engine = shop(sqlite_url)
    engine.import_csv(path, flow="shop", id_column="id")
    assert engine.lead("é").fields["email"] == "é@x.example"


@pytest.mark.parametrize("kept", [50_000, 3], ids=["verdicts-kept", "judged-again"])
def test_both_ways_of_the_second_pass_agree(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """Small files reuse the first pass's verdicts; big ones are judged
    again while applying.  Both give the same leads, history and progress."""
    import saleflow.importing.run as importer

    monkeypatch.setattr(importer, "KEPT_ROWS", kept)
    rows = ["id,at,owner,budget,stage"]
    for i, lead in enumerate(["a", "b", "c", "a", "b", "c"]):
        rows.append(f"{lead},2024-01-0{i + 1},ann,2000,{'sql' if i < 3 else ''}")
    rows.append("a,2024-01-08,ann,2000,lost")
    rows.append("d,2024-01-09,ann,lots,")  # a bad row, skipped to a file
    path = write(tmp_path, "\n".join(rows) + "\n")
    engine = shop(sqlite_url)
    seen: list[int] = []
    result = engine.import_csv(
        path,
        flow="shop",
        id_column="id",
        at_column="at",
        stage_column="stage",
        chunk=2,
        skip_bad=tmp_path / "bad.csv",
        progress=seen.append,
    )
    assert (result.rows, result.imported, result.bad, result.created) == (8, 7, 1, 3)
    assert {x: engine.lead(x).stage for x in "abc"} == {"a": "lost", "b": "deal", "c": "sql"}
    assert sum(seen) == 2 * path.stat().st_size
    assert "lots" in (tmp_path / "bad.csv").read_text()
    assert engine.verify() == []
