"""`saleflow export journal|leads|stages` and `saleflow.views.export` (SPEC §6,
"Export for BI"), on SQLite and PostgreSQL.

The stages export is checked against times worked out by hand below; the
journal export against the journal itself; CSV against JSON Lines; and
memory against the row count.  Bad input has its cases in
tests/test_bad_input.py (the "export:" block) and a hypothesis test here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import KPI_FLOW, dump, kpi_day
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.csvcell import unescape_cell
from saleflow.language.parse import parse_flow
from saleflow.views.export import (
    JOURNAL_KEYS,
    LEAD_KEYS,
    STAGE_KEYS,
    csv_cell,
    days_between,
    export_rows,
    write_to,
)

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")
NOW = kpi_day(10)  # the engine's clock in every scenario: 2026-01-11T00:00Z

# Version 2 of the kpi flow: one more field; the same stages and teams.
KPI_V2 = KPI_FLOW.replace("flow kpi version 1", "flow kpi version 2").replace(
    "field region", "field source       text\nfield region", 1
)


def iso(days: float) -> str:
    return kpi_day(days).isoformat()


def build_scenario(url: str) -> None:
    """Three leads of the kpi flow (day 0 is 2026-01-01; the clock is day 10):

    - s: created day 0 (new); advanced to mql day 2; advanced to sql day 5.5;
      lost_reason=timing and recycled to mql day 6 (cycle 2); advanced to
      sql day 8.25; migrated to version 2 at day 10 (no new stage row).
    - k: created day 1 (new); skipped to sql day 1.5; exits to lost day 4.
    - r: created day 10 minus 8 hours, still in new.
    """
    with Engine.open(db=url, now=NOW, actor="tester") as engine:
        engine.deploy(parse_flow(KPI_FLOW, "kpi.flow"))
        engine.add_lead("s", flow="kpi", at=kpi_day(0), region="east")
        engine.advance("s", to="mql", at=kpi_day(2))
        engine.advance("s", to="sql", at=kpi_day(5.5))
        engine.set("s", {"lost_reason": "timing"}, at=kpi_day(6))
        engine.advance("s", to="mql", at=kpi_day(6))
        engine.advance("s", to="sql", at=kpi_day(8.25))
        engine.add_lead("k", flow="kpi", at=kpi_day(1))
        engine.advance("k", to="sql", at=kpi_day(1.5))
        engine.advance("k", to="lost", at=kpi_day(4))
        engine.add_lead("r", flow="kpi", at=kpi_day(10) - timedelta(hours=8), region="west")
        engine.deploy(parse_flow(KPI_V2, "kpi.flow"))
        engine.migrate("s", version=2)


# The stages export of the scenario, worked out by hand: (lead, cycle,
# stage, team, entered, exited, days, exit kind, next stage); days are the
# differences of the days above; an open row counts to day 10.
EXPECTED_STAGES = [
    ("k", 1, "new", "marketing", 1, 1.5, 0.5, "skip", "sql"),
    ("k", 1, "sql", "sales", 1.5, 4, 2.5, "exit", "lost"),
    ("k", 1, "lost", None, 4, None, 6.0, None, None),  # a side stage: no team; still there
    ("r", 1, "new", "marketing", 10 - 1 / 3, None, 0.3333, None, None),  # 8 hours, 4 decimals
    ("s", 1, "new", "marketing", 0, 2, 2.0, "advance", "mql"),
    ("s", 1, "mql", "marketing", 2, 5.5, 3.5, "advance", "sql"),
    ("s", 1, "sql", "sales", 5.5, 6, 0.5, "recycle", "mql"),
    ("s", 2, "mql", "marketing", 6, 8.25, 2.25, "advance", "sql"),
    ("s", 2, "sql", "sales", 8.25, None, 1.75, None, None),  # the migration made no row
]


def expected_stage_rows() -> list[dict[str, Any]]:
    rows = []
    for lead, cycle, stage, team, entered, exited, days, kind, next_stage in EXPECTED_STAGES:
        rows.append(
            {
                "lead": lead,
                "cycle": cycle,
                "stage": stage,
                "team": team,
                "entered_at": iso(entered),
                "exited_at": None if exited is None else iso(exited),
                "days_in_stage": days,
                "exit_kind": kind,
                "next_stage": next_stage,
            }
        )
    return rows


@pytest.fixture
def scenario(db_url: str) -> str:
    build_scenario(db_url)
    return db_url


def cli(url: str, *args: str, now: datetime = NOW) -> Any:
    result = CliRunner().invoke(main, ["--db", url, "--now", now.isoformat(), *args], catch_exceptions=False)
    return result


def jsonl(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def csv_rows(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], rows[1:]


# --------------------------------------------------------------------------
# stages
# --------------------------------------------------------------------------


def test_stages_are_the_times_worked_out_by_hand(scenario: str) -> None:
    result = cli(scenario, "export", "stages", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    assert jsonl(result.stdout) == expected_stage_rows()


def test_stages_as_csv_say_the_same(scenario: str) -> None:
    result = cli(scenario, "export", "stages")
    assert result.exit_code == 0, result.stderr
    header, rows = csv_rows(result.stdout)
    assert header == list(STAGE_KEYS)
    expected = [[str(csv_cell(row[key])) for key in STAGE_KEYS] for row in expected_stage_rows()]
    assert rows == expected
    assert rows[2] == ["k", "1", "lost", "", iso(4), "", "6.0", "", ""]


def test_the_open_row_counts_to_now(scenario: str) -> None:
    later = cli(scenario, "export", "stages", "--format", "jsonl", now=kpi_day(12.5))
    open_rows = {
        (r["lead"], r["stage"]): r["days_in_stage"] for r in jsonl(later.stdout) if not r["exited_at"]
    }
    assert open_rows == {("k", "lost"): 8.5, ("r", "new"): 2.8333, ("s", "sql"): 4.25}


def test_stages_since_until_filter_on_entered_at(scenario: str) -> None:
    # --until a date is the whole day: entered on days 2 to 5 (Jan 3 to Jan 6)
    result = cli(
        scenario, "export", "stages", "--since", "2026-01-03", "--until", "2026-01-06", "--format", "jsonl"
    )
    assert result.exit_code == 0, result.stderr
    found = [(r["lead"], r["cycle"], r["stage"]) for r in jsonl(result.stdout)]
    assert found == [("k", 1, "lost"), ("s", 1, "mql"), ("s", 1, "sql")]


def test_stages_by_flow_and_api(scenario: str) -> None:
    with Engine.open(db=scenario, now=NOW) as engine:
        rows = list(export_rows(engine, "stages", flow="kpi", chunk=2))  # leads span chunks
    as_text = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()} for row in rows]
    assert as_text == expected_stage_rows()


def test_days_between_rounds_to_four_decimals() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert days_between(start, start + timedelta(hours=8)) == 0.3333
    assert days_between(start, start + timedelta(hours=16)) == 0.6667
    assert days_between(start, start + timedelta(days=3, seconds=1)) == 3.0


# --------------------------------------------------------------------------
# journal
# --------------------------------------------------------------------------


def test_journal_export_is_the_journal(scenario: str) -> None:
    result = cli(scenario, "export", "journal", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout)
    with Engine.open(db=scenario, now=NOW) as engine:
        entries = sorted((e for page in engine.store.iter_journal() for e in page), key=lambda e: e.seq)
    assert len(rows) == len(entries) > 10
    assert [r["seq"] for r in rows] == [e.seq for e in entries]
    assert all(list(row) == list(JOURNAL_KEYS) for row in rows)
    for row, e in zip(rows, entries, strict=True):
        assert row == {
            "seq": e.seq,
            "lead": e.lead_id,
            "lead_seq": e.lead_seq,
            "entry": e.entry,
            "kind": e.kind,
            "from": e.from_stage,
            "stage": e.stage,
            "cycle": e.cycle,
            "at": e.at.isoformat(),
            "recorded_at": e.recorded_at.isoformat(),
            "actor": e.actor,
            "reason": e.reason,
            "flow": e.flow,
            "version": e.version,
            "data": dict(e.data),
            "hash": e.hash,
        }
    entries_kinds = {r["entry"] for r in rows}
    assert entries_kinds == {"created", "set", "moved", "migrated", "sla_breach"}  # k overstayed sql


def test_journal_export_is_a_consistent_prefix(scenario: str) -> None:
    """The export reads up to the journal's position when it starts: what
    is written meanwhile is not in it, even between its chunks."""
    with Engine.open(db=scenario, now=NOW) as engine:
        high = engine.store.high_water()
        rows = export_rows(engine, "journal", chunk=3)
        first = next(iter(rows))
        engine.add_lead("late", flow="kpi", at=kpi_day(9))
        engine.set("s", {"region": "west"}, at=kpi_day(9))
        rest = list(rows)
        seqs = [first["seq"], *(r["seq"] for r in rest)]
        assert seqs == list(range(1, high + 1))
        assert engine.store.high_water() > high
        # a new export sees the new entries
        assert len(list(export_rows(engine, "journal"))) == engine.store.high_water()


def test_journal_since_until_and_flow(scenario: str) -> None:
    result = cli(
        scenario,
        "export",
        "journal",
        "--flow",
        "kpi",
        "--since",
        iso(2),
        "--until",
        iso(6),
        "--format",
        "jsonl",
    )
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout)
    assert rows and all(iso(2) <= r["at"] <= iso(6) for r in rows)
    assert [r["seq"] for r in rows] == sorted(r["seq"] for r in rows)
    everything = jsonl(cli(scenario, "export", "journal", "--format", "jsonl").stdout)
    assert rows == [r for r in everything if kpi_day(2) <= datetime.fromisoformat(r["at"]) <= kpi_day(6)]


# --------------------------------------------------------------------------
# leads
# --------------------------------------------------------------------------


def test_leads_export_with_a_flow_has_a_column_per_field(scenario: str) -> None:
    result = cli(scenario, "export", "leads", "--flow", "kpi", "--format", "jsonl")
    assert result.exit_code == 0, result.stderr
    rows = jsonl(result.stdout)
    assert list(rows[0]) == [*LEAD_KEYS, "source", "region", "lost_reason"]  # v2's order; v1 adds none
    by_id = {r["id"]: r for r in rows}
    assert list(by_id) == ["k", "r", "s"]
    assert by_id["s"] == {
        "id": "s",
        "flow": "kpi",
        "version": 2,
        "stage": "sql",
        "team": "sales",
        "cycle": 2,
        "score": 0,
        "created_at": iso(0),
        "entered_at": iso(8.25),
        "updated_at": iso(10),  # migrated then
        "source": None,
        "region": "east",
        "lost_reason": "timing",
    }
    assert by_id["k"]["team"] is None and by_id["k"]["stage"] == "lost"
    header, csv_body = csv_rows(cli(scenario, "export", "leads", "--flow", "kpi").stdout)
    assert header == list(rows[0])
    assert csv_body[0][-3:] == ["", "", ""]  # k: nothing set


def test_leads_export_without_a_flow_has_fields_as_json(scenario: str) -> None:
    result = cli(scenario, "export", "leads", "--since", "2026-01-02")
    assert result.exit_code == 0, result.stderr
    header, rows = csv_rows(result.stdout)
    assert header == [*LEAD_KEYS, "fields"]
    assert [r[0] for r in rows] == ["k", "r"]  # s was created on Jan 1
    assert json.loads(rows[1][-1]) == {"region": "west"}


# --------------------------------------------------------------------------
# CSV and JSON Lines, injection, files
# --------------------------------------------------------------------------


def _as_csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return str(value)


@pytest.mark.parametrize("table", ["journal", "leads", "stages"])
def test_csv_and_jsonl_agree(scenario: str, table: str) -> None:
    as_csv = cli(scenario, "export", table, "--format", "csv")
    as_jsonl = cli(scenario, "export", table, "--format", "jsonl")
    assert as_csv.exit_code == as_jsonl.exit_code == 0
    header, rows = csv_rows(as_csv.stdout)
    objects = jsonl(as_jsonl.stdout)
    assert len(rows) == len(objects) > 0
    for row, obj in zip(rows, objects, strict=True):
        assert header == list(obj)
        assert [unescape_cell(cell) for cell in row] == [_as_csv_text(v) for v in obj.values()]


FORMULAS = ["=1+1", "@SUM(A1)", "+41+1", "-2+3", "\tx", '=HYPERLINK("http://x")']


def test_csv_cells_are_neutralised(db_url: str) -> None:
    with Engine.open(THE_MODEL, db=db_url, now=NOW, actor="=cmd") as engine:
        for number, formula in enumerate(FORMULAS):
            engine.add_lead(f"={number}", email=formula, company=formula)
    for table in ("journal", "leads", "stages"):
        for extra in ([], ["--flow", "the_model"]):
            result = cli(db_url, "export", table, *extra)
            assert result.exit_code == 0, result.stderr
            _header, rows = csv_rows(result.stdout)
            for cell in [c for row in rows for c in row]:
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")) or _is_number(cell), (
                    table,
                    cell,
                )
            cells = {c for row in rows for c in row}
            assert "'=0" in cells
            if table == "leads" and extra:
                assert {"'=1+1", "'@SUM(A1)", "'+41+1", "'-2+3"} <= cells
            if table == "journal":
                assert "'=cmd" in cells


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_output_file_is_written_whole_and_utf8(scenario: str, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "stages ünï.csv"
    result = cli(scenario, "export", "stages", "-o", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == f"wrote 9 rows of stages to {target}\n"
    assert target.read_text(encoding="utf-8") == cli(scenario, "export", "stages").stdout
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temporary file left


def test_a_failure_leaves_no_half_written_file(db_url: str, tmp_path: Path) -> None:
    """A corrupted lead read in the second chunk: the error, no file (and an
    earlier file as it was), no temporary file."""
    from sqlalchemy import create_engine, text

    with Engine.open(THE_MODEL, db=db_url, now=NOW) as engine:
        for n in range(5):
            engine.add_lead(f"lead-{n}", email="x@y.z")
    engine_sql = create_engine(db_url)
    with engine_sql.begin() as conn:
        value = "CAST('[1, 2]' AS jsonb)" if db_url.startswith("postgresql") else "'[1, 2]'"
        conn.execute(text(f"UPDATE leads SET fields = {value} WHERE id = 'lead-3'"))
    engine_sql.dispose()
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "leads.csv"
    target.write_text("before\n", encoding="utf-8")
    with Engine.open(db=db_url, now=NOW) as engine:
        rows = export_rows(engine, "leads", chunk=2)
        with pytest.raises(Exception, match="corrupted"):
            write_to(rows, "csv", str(target))
    assert target.read_text(encoding="utf-8") == "before\n"
    assert [p.name for p in target.parent.iterdir()] == ["leads.csv"]
    target.unlink()
    result = cli(db_url, "export", "leads", "-o", str(target))
    assert result.exit_code == 2 and 'the database is corrupted: lead "lead-3"' in result.stderr
    assert list(target.parent.iterdir()) == []


def test_a_reader_that_stops_early_is_no_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'pipe.db'}"
    with Engine.open(THE_MODEL, db=url, now=NOW) as engine:
        engine.add_leads(((f"pipe-{n:05}", {"email": "x@y.z"}) for n in range(3000)), flow="the_model")
    command = Path(sys.executable).parent / "saleflow"
    proc = subprocess.Popen(
        [str(command), "--db", url, "export", "journal"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(100)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141), stderr
    assert stderr == ""


# --------------------------------------------------------------------------
# flat memory
# --------------------------------------------------------------------------


def _peak(run: Any) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("table", ["journal", "leads", "stages"])
def test_memory_stays_flat(db_url: str, tmp_path: Path, table: str) -> None:
    """Streaming 4,000 leads' rows to a file peaks at a small fraction of
    what holding the rows takes: the peak per row is a few bytes (a chunk
    at a time), where holding them costs hundreds per row."""
    leads = 4000
    with Engine.open(THE_MODEL, db=db_url, now=NOW) as engine:
        engine.add_leads(
            ((f"m-{n:05}", {"email": f"m{n}@x.example"}) for n in range(leads)), flow="the_model"
        )
        target = tmp_path / "out.csv"

        def stream() -> None:
            write_to(export_rows(engine, table, flow="the_model", chunk=200), "csv", str(target))

        def hold() -> None:
            held = list(export_rows(engine, table, flow="the_model", chunk=200))
            assert len(held) >= leads

        stream()  # the first run compiles statements and fills caches
        streamed = _peak(stream)
        held = _peak(hold)
    rows = sum(1 for _ in target.open(encoding="utf-8")) - 1
    assert rows >= leads
    # Measured: about 60-140 bytes per row streamed (the peak is a chunk of
    # 200 rows, whatever the count), 1,000-1,600 per row held.
    assert streamed / rows < 250, (streamed, rows)
    assert held > 5 * streamed, (held, streamed)


# --------------------------------------------------------------------------
# bad input: random --since, --until, --flow and -o
# --------------------------------------------------------------------------

ODD = st.text(alphabet=st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["9999-12-31", "0001-01-01", "2026-13-01", "99999-01-01", "2026-W13-2", "\x00", "2026-01-01\x00", " "]
)


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('export_bad') / 'bad.db'}"
    build_scenario(url)
    return url


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--since", "--until", "--flow", "-o"]), value=ODD)
def test_odd_options_are_one_sentence(small_db: str, tmp_path: Path, option: str, value: str) -> None:
    before = dump(small_db)
    folder = tmp_path / "out"
    folder.mkdir(exist_ok=True)
    for leftover in folder.iterdir():
        leftover.unlink()
    given_value = "./" + value if option == "-o" else value  # never a file outside the folder
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(
            main, ["--db", small_db, "--now", NOW.isoformat(), "export", "stages", option, given_value]
        )
    finally:
        os.chdir(cwd)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 2, 3), result.output
    if result.exit_code:
        assert result.stdout == ""
        assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
        assert [p for p in folder.iterdir()] == []
    else:
        made = [p for p in folder.iterdir()]
        assert option != "-o" or len(made) <= 1
    assert dump(small_db) == before


def test_the_api_refuses_what_the_cli_refuses(scenario: str, tmp_path: Path) -> None:
    from saleflow.errors import BadInput, NotFound

    with Engine.open(db=scenario, now=NOW) as engine:
        with pytest.raises(BadInput, match="the tables are journal, leads, stages"):
            export_rows(engine, "deals")
        with pytest.raises(NotFound, match='flow "nope" is not deployed'):
            export_rows(engine, "stages", flow="nope")
        with pytest.raises(BadInput, match="is before --since"):
            export_rows(engine, "journal", since=kpi_day(3), until=kpi_day(2))
        with pytest.raises(BadInput, match="the formats are csv, jsonl"):
            write_to(export_rows(engine, "journal"), "xml", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_devices_and_links_are_written_through(scenario: str, tmp_path: Path) -> None:
    assert cli(scenario, "export", "journal", "-o", os.devnull).exit_code == 0
    assert Path(os.devnull).exists() and not Path(os.devnull).is_file()
    (tmp_path / "out").mkdir()
    real = tmp_path / "out" / "real.csv"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "out" / "link.csv"
    link.symlink_to(real)
    assert cli(scenario, "export", "stages", "-o", str(link)).exit_code == 0
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8").startswith("lead,cycle,stage,")
