"""`saleflow import` under attack (issue 8): all or nothing, on both backends.

- every value a database would refuse is a bad row of the checking pass
  (line, column, reason), never a failure halfway through the writes;
- when the database refuses a row anyway (here: a trigger), the file lands
  whole or not at all;
- the ``--skip-bad`` file is written before the database is touched, and an
  import that cannot write it imports nothing;
- reads are bounded: a file without line breaks is refused, not read whole;
- hypothesis throws odd files at the CLI: exit 0 or 2, never a traceback,
  and a refused file changes no row of any table.

The kill -9 test is in test_import_crash.py.
"""

from __future__ import annotations

import csv
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import dump
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import BadInput
from saleflow.importing import BadRows
from saleflow.language.parse import parse_flow
from saleflow.limits import MAX_CSV_ROW_BYTES, MAX_ID_LENGTH, MAX_TEXT_LENGTH

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

FLOW = """\
flow shop version 1 "Import hardening"

field email      text
field employees  int
field rate       number
field budget     money
field vip        bool  default false
field signed_on  date
field tier       one of [bronze, silver, gold]

team marketing "Marketing" {
  stage new    initial
  stage known  when email is set
  stage mql    when employees >= 100
}
stage lost  final
"""

HEADER = "id,email,employees,rate,budget,vip,signed_on,tier,at,stage,notes"


def shop(url: str) -> Engine:
    return Engine.open(parse_flow(FLOW, "shop.flow"), db=url, now=T0, actor="tester")


def seeded(url: str) -> None:
    """The flow and a lead of its own, so that "unchanged" means something."""
    with shop(url) as engine:
        engine.add_lead("keep", flow="shop", email="k@x.example", employees=5)


def invoke(url: str, path: Path | str, *extra: str) -> Any:
    args = ["--db", url, "--now", T0.isoformat(), "import", str(path), "--flow", "shop", "--id-column", "id"]
    return CliRunner().invoke(main, [*args, *extra])


def one_sentence(result: Any) -> str:
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def many_rows(count: int, bad_at: int | None = None, bad: str = "bad\x00mail") -> str:
    """A file of `count` good leads; row `bad_at` (1-based) has `bad` as email."""
    rows = [HEADER]
    for n in range(1, count + 1):
        email = bad if n == bad_at else f"l{n}@x.example"
        rows.append(f"lead-{n},{email},{n},1.5,{n * 10},no,2024-01-02,gold,2024-01-01T00:00:00Z,,")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------------------
# every value the database would refuse is a bad row of the checking pass
# ---------------------------------------------------------------------------

DIGITS_4301 = "9" * 4301

BAD_CELLS: dict[str, tuple[str, str, str]] = {
    # name: (column, cell, fragment of the reason)
    "NUL in a text cell": ("email", "a\x00b@x.example", "NUL byte"),
    "NUL in the lead id": ("id", "x\x00y", "the lead id holds a NUL byte"),
    "NUL in an enum cell": ("tier", "gold\x00", "NUL byte"),
    "NUL in the stage": ("stage", "m\x00ql", "the stage holds a NUL byte"),
    "NUL in the time": ("at", "2024-01-01\x00", "the time holds a NUL byte"),
    "2**63 in an int": ("employees", str(2**63), "is out of range"),
    "-2**63 - 1 in an int": ("employees", str(-(2**63) - 1), "is out of range"),
    "2**64 in an int": ("employees", str(2**64), "is out of range"),
    "1e19 as an int": ("employees", "1e19", "is out of range"),
    "a 4,301-digit number": ("employees", DIGITS_4301, "characters long"),
    "a 4,301-digit money": ("budget", DIGITS_4301, "characters long"),
    "money beyond MAX_NUMBER": ("budget", "2e18", "is out of range"),
    "a number of 1e300": ("rate", "1e300", "is out of range"),
    "1e400 (inf)": ("rate", "1e400", "not a finite number"),
    "inf": ("rate", "inf", "not a finite number"),
    "nan": ("budget", "nan", "not a finite number"),
    "an id too long": ("id", "x" * (MAX_ID_LENGTH + 1), "the lead id is 256 characters long"),
    "text too long": ("email", "x" * (MAX_TEXT_LENGTH + 1), "the limit is 100,000"),
    "a long enum cell": ("tier", "g" * 300, "the limit is 255"),
    "year 9999 in the at-column": ("at", "9999-12-31T23:59:59Z", "out of range"),
    "year 1800 in the at-column": ("at", "1800-01-01", "out of range"),
    "a time past the last instant": ("at", "9999-12-31T23:59:59.999999-05:00", "out of range"),
}


def _row(**cells: str) -> str:
    values = {
        "id": "n1",
        "email": "n1@x.example",
        "employees": "10",
        "rate": "1.5",
        "budget": "100",
        "vip": "no",
        "signed_on": "2024-01-02",
        "tier": "gold",
        "at": "2024-01-01T00:00:00Z",
        "stage": "",
        "notes": "",
    }
    values.update(cells)
    out = []
    for name in HEADER.split(","):
        value = values[name]
        out.append('"' + value.replace('"', '""') + '"' if set(value) & set(',"\r\n') else value)
    return ",".join(out)


@pytest.mark.parametrize("name", list(BAD_CELLS))
def test_a_value_the_database_would_refuse_is_a_bad_row(sqlite_url: str, tmp_path: Path, name: str) -> None:
    column, cell, fragment = BAD_CELLS[name]
    seeded(sqlite_url)
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{_row()}\n{_row(**{'id': 'n2', column: cell})}\n", encoding="utf-8")
    before = dump(sqlite_url)
    with shop(sqlite_url) as engine, pytest.raises(BadRows) as caught:
        engine.import_csv(path, flow="shop", id_column="id", at_column="at", stage_column="stage")
    assert caught.value.count == 1
    (bad,) = caught.value.rows
    assert (bad.line, bad.column) == (3, column)
    assert fragment in bad.reason, bad.reason
    assert len(bad.reason) < 400  # a huge cell is not repeated in the reason
    assert dump(sqlite_url) == before


@pytest.mark.parametrize("name", ["NUL in a text cell", "2**64 in an int", "year 9999 in the at-column"])
def test_a_refused_value_through_the_cli_on_both_backends(db_url: str, tmp_path: Path, name: str) -> None:
    column, cell, fragment = BAD_CELLS[name]
    seeded(db_url)
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\n{_row()}\n{_row(**{'id': 'n2', column: cell})}\n", encoding="utf-8")
    before = dump(db_url)
    result = invoke(db_url, path, "--at-column", "at")
    assert result.exit_code == 2
    message = one_sentence(result)
    assert f'1 bad row, so nothing was imported: line 3, column "{column}"' in message
    assert fragment in message
    assert dump(db_url) == before


def test_the_largest_values_are_taken(sqlite_url: str, tmp_path: Path) -> None:
    """The limits are limits, not one less: what is allowed is stored."""
    seeded(sqlite_url)
    path = tmp_path / "edge.csv"
    row = _row(
        id="x" * MAX_ID_LENGTH,
        email="é" * MAX_TEXT_LENGTH,
        employees=str(2**63 - 1),
        budget="1e18",
        rate="-1e18",
        at="8999-12-31T23:59:59Z",
    )
    path.write_text(f"{HEADER}\n{row}\n{_row(id='low', employees=str(-(2**63)))}\n", encoding="utf-8")
    with shop(sqlite_url) as engine:
        result = engine.import_csv(path, flow="shop", id_column="id", at_column="at")
        assert (result.created, result.bad) == (2, 0)
        fields = engine.lead("x" * MAX_ID_LENGTH).fields
        assert fields["employees"] == 2**63 - 1 and fields["budget"] == 10**18
        assert fields["email"] == "é" * MAX_TEXT_LENGTH
        assert engine.lead("low").fields["employees"] == -(2**63)
        assert engine.verify() == []


# ---------------------------------------------------------------------------
# all or nothing
# ---------------------------------------------------------------------------


def test_a_nul_on_row_2201_of_2500_imports_nothing(db_url: str, tmp_path: Path) -> None:
    """The issue's example: the checking pass finds it; nothing is written,
    one sentence, no stray driver output."""
    seeded(db_url)
    path = tmp_path / "big.csv"
    path.write_text(many_rows(2500, bad_at=2201), encoding="utf-8")
    before = dump(db_url)
    result = invoke(db_url, path)
    assert result.exit_code == 2
    message = one_sentence(result)
    assert 'line 2202, column "email": the value holds a NUL byte' in message
    assert "pipeline" not in result.output
    assert dump(db_url) == before


def _refuse_lead(url: str, lead_id: str) -> None:
    """A trigger that makes the database itself refuse to store `lead_id`:
    a failure the checking pass cannot foresee."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if url.startswith("sqlite"):
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse BEFORE INSERT ON leads "
                        f"WHEN NEW.id = '{lead_id}' BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END"
                    )
                )
            else:
                conn.execute(
                    text(
                        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                        f"IF NEW.id = '{lead_id}' THEN RAISE EXCEPTION 'refused by a trigger'; END IF; "
                        "RETURN NEW; END $$ LANGUAGE plpgsql"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER refuse BEFORE INSERT ON leads FOR EACH ROW EXECUTE FUNCTION refuse()"
                    )
                )
    finally:
        engine.dispose()


@pytest.mark.parametrize("kept", [50_000, 0], ids=["verdicts-kept", "judged-again"])
def test_the_database_refusing_row_2201_leaves_nothing_behind(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """Rows 1-2,200 were written (two chunks) when the database refuses the
    third chunk: the whole file is rolled back, on both backends, whether
    the second pass reuses the first pass's verdicts or judges again."""
    import saleflow.importing.run as importer

    monkeypatch.setattr(importer, "KEPT_ROWS", kept)
    seeded(db_url)
    _refuse_lead(db_url, "lead-2201")
    path = tmp_path / "big.csv"
    path.write_text(many_rows(2500), encoding="utf-8")
    before = dump(db_url)
    result = invoke(db_url, path)
    assert result.exit_code == 2, result.output
    message = one_sentence(result)
    assert "refused by a trigger" in message
    assert "pipeline" not in result.output
    assert dump(db_url) == before
    with shop(db_url) as engine:
        assert [lead.id for lead in engine.leads(flow="shop")] == ["keep"]
        assert engine.verify() == []


def test_a_file_changed_during_the_import_imports_nothing(sqlite_url: str, tmp_path: Path) -> None:
    """The second pass reads the file again; if it is no longer the file the
    first pass judged, nothing is imported."""
    seeded(sqlite_url)
    path = tmp_path / "moving.csv"
    path.write_text(many_rows(30), encoding="utf-8")
    before = dump(sqlite_url)
    calls: list[int] = []

    def progress(size: int) -> None:
        calls.append(size)
        if len(calls) == 1:  # the first pass's first chunk: someone appends
            with path.open("a", encoding="utf-8") as handle:
                handle.write("late,late@x.example,1,1,1,no,2024-01-02,gold,2024-01-01,,\n")

    with shop(sqlite_url) as engine, pytest.raises(BadInput, match="changed during the import; nothing"):
        engine.import_csv(path, flow="shop", id_column="id", progress=progress)
    assert dump(sqlite_url) == before


def test_callbacks_still_see_every_entry(sqlite_url: str, tmp_path: Path) -> None:
    """Entries are counted, not kept, unless on_enter callbacks want them."""
    seeded(sqlite_url)
    path = tmp_path / "few.csv"
    path.write_text(many_rows(5), encoding="utf-8")
    seen: list[str] = []
    with shop(sqlite_url) as engine:
        engine.on_enter("known", lambda entry: seen.append(entry.lead_id))
        result = engine.import_csv(path, flow="shop", id_column="id", chunk=2)
    assert sorted(seen) == [f"lead-{n}" for n in range(1, 6)]
    assert (result.created, result.moves) == (5, 5)


# ---------------------------------------------------------------------------
# --skip-bad: written first, or nothing is imported
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_skip_bad_to_a_full_disk_imports_nothing(db_url: str, tmp_path: Path) -> None:
    seeded(db_url)
    path = tmp_path / "mixed.csv"
    path.write_text(f"{HEADER}\n{_row(id='good')}\n{_row(id='bad', employees='many')}\n", encoding="utf-8")
    before = dump(db_url)
    result = invoke(db_url, path, "--skip-bad", "/dev/full")
    assert result.exit_code == 2
    message = one_sentence(result)
    assert "cannot write /dev/full" in message and "nothing was imported" in message
    assert dump(db_url) == before


def test_skip_bad_to_a_folder_that_does_not_exist_imports_nothing(sqlite_url: str, tmp_path: Path) -> None:
    seeded(sqlite_url)
    path = tmp_path / "mixed.csv"
    path.write_text(f"{HEADER}\n{_row(id='good')}\n{_row(id='bad', employees='many')}\n", encoding="utf-8")
    before = dump(sqlite_url)
    result = invoke(sqlite_url, path, "--skip-bad", str(tmp_path / "no" / "such" / "rejects.csv"))
    assert result.exit_code == 2
    assert "cannot write" in one_sentence(result)
    assert dump(sqlite_url) == before


def test_a_rejects_file_is_safe_and_imports_again(db_url: str, tmp_path: Path) -> None:
    """Formula cells are neutralised in the rejects file and read back as
    they were: fix the bad cell, import the rejects file, and the values are
    the original ones."""
    seeded(db_url)
    path = tmp_path / "mixed.csv"
    path.write_text(
        f"{HEADER}\n{_row(id='good')}\n"
        + _row(id="=cmd|' /C calc'!A0", email="@SUM(1+1)", employees="many", notes="-x")
        + "\n",
        encoding="utf-8",
    )
    rejects = tmp_path / "rejects.csv"
    with shop(db_url) as engine:
        result = engine.import_csv(path, flow="shop", id_column="id", skip_bad=rejects)
        assert (result.imported, result.bad) == (1, 1)
    with rejects.open(newline="", encoding="utf-8") as handle:
        written = list(csv.reader(handle))
    assert written[1][0] == "'=cmd|' /C calc'!A0" and written[1][1] == "'@SUM(1+1)"
    assert written[1][-2] == "'-x"
    assert all(not cell.startswith(("=", "+", "@")) for row in written for cell in row)
    written[1][2] = "12"  # fixed
    fixed = tmp_path / "fixed.csv"
    with fixed.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([row[:-1] for row in written])
    with shop(db_url) as engine:
        again = engine.import_csv(fixed, flow="shop", id_column="id")
        assert (again.created, again.bad) == (1, 0)
        lead = engine.lead("=cmd|' /C calc'!A0")
        assert lead.fields["email"] == "@SUM(1+1)" and lead.fields["employees"] == 12
        assert engine.verify() == []


# ---------------------------------------------------------------------------
# bounded reads
# ---------------------------------------------------------------------------


def test_a_line_over_the_limit_is_refused_naming_it(sqlite_url: str, tmp_path: Path) -> None:
    seeded(sqlite_url)
    path = tmp_path / "long.csv"
    path.write_text(f"{HEADER}\n{_row()}\n{_row(id='n2', notes='x' * MAX_CSV_ROW_BYTES)}\n", encoding="utf-8")
    before = dump(sqlite_url)
    result = invoke(sqlite_url, path)
    assert result.exit_code == 2
    assert "long.csv line 3 is longer than 1,024 KiB" in one_sentence(result)
    assert dump(sqlite_url) == before


def test_a_row_over_the_limit_across_lines_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    """A quoted cell with line breaks: the row, not each line, is bounded."""
    seeded(sqlite_url)
    path = tmp_path / "tall.csv"
    cell = '"' + "\n".join(["y" * 999] * 100) + '"'  # 100,000 bytes over 100 lines
    extra = ",".join([cell] * (MAX_CSV_ROW_BYTES // 100_000 + 1))
    path.write_text(f"{HEADER}\n{_row()}\n{_row(id='n2')},{extra}\n", encoding="utf-8")
    result = invoke(sqlite_url, path)
    assert result.exit_code == 2
    assert "tall.csv line 3 (a row running on to line" in one_sentence(result)


def test_a_row_just_under_the_limit_is_read(sqlite_url: str, tmp_path: Path) -> None:
    seeded(sqlite_url)
    path = tmp_path / "wide.csv"
    row = _row(id="n2", notes="z" * 100_000)
    wide = _row(id="n3", notes="w" * (MAX_CSV_ROW_BYTES - len(_row(id="n3")) - 1))
    path.write_text(f"{HEADER}\n{row}\n{wide}\n", encoding="utf-8")
    assert len(wide) + 1 == MAX_CSV_ROW_BYTES
    with shop(sqlite_url) as engine, pytest.raises(BadInput, match="field larger than field limit"):
        engine.import_csv(path, flow="shop", id_column="id")  # the csv module's own cell limit
    path.write_text(f"{HEADER}\n{row}\n", encoding="utf-8")
    with shop(sqlite_url) as engine:
        assert engine.import_csv(path, flow="shop", id_column="id").created == 1


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_a_device_is_refused(sqlite_url: str, device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    seeded(sqlite_url)
    before = dump(sqlite_url)
    result = invoke(sqlite_url, device)
    assert result.exit_code == 2
    assert f"{device} is not a regular file" in one_sentence(result)
    assert dump(sqlite_url) == before


def test_a_huge_file_without_line_breaks_is_not_read_into_memory(sqlite_url: str, tmp_path: Path) -> None:
    """A sparse 8 GiB file of zero bytes, imported by a process that may
    use 1 GiB of memory: refused at its first line, no MemoryError."""
    seeded(sqlite_url)
    path = tmp_path / "zeros.csv"
    with path.open("wb") as handle:
        handle.truncate(8 << 30)
    command = Path(sys.executable).parent / "saleflow"
    if not command.exists():
        pytest.skip("the saleflow command is not installed next to this Python")

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run(
        [str(command), "--db", sqlite_url, "import", str(path), "--flow", "shop", "--id-column", "id"],
        capture_output=True,
        text=True,
        preexec_fn=limit_memory,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "zeros.csv line 1 is longer than 1,024 KiB" in done.stderr


# ---------------------------------------------------------------------------
# attack: odd files through the CLI, on both backends
# ---------------------------------------------------------------------------

EXAMPLES = int(os.environ.get("SALEFLOW_FUZZ_EXAMPLES", "25"))

NUMBERS = st.one_of(
    st.integers().map(str),
    st.sampled_from(
        [str(2**63), str(2**63 - 1), str(-(2**63)), str(-(2**63) - 1), str(2**64), "1e18", "1e19", "2e18"]
    ),
    st.sampled_from(["1e308", "1e309", "-1e400", "inf", "-inf", "nan", "NaN", "0x10", "1_000", "١٢", "4,5"]),
    st.integers(min_value=4290, max_value=4310).map(lambda n: "7" * n),
    st.floats().map(repr),
)
TIMES = st.one_of(
    st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(
        [
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59-05:00",
            "0001-01-01T00:00:00+01:00",
            "8999-12-31",
            "9000-01-01",
            "1899-12-31T23:59:59Z",
            "2024-02-30",
            "2024-01-01T25:00",
            "",
            " ",
        ]
    ),
)
ODD_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"]) | st.sampled_from("\x00\r\n\"',=+-@\ufeff\u2028\t"),
    max_size=30,
)
CELL = st.one_of(
    ODD_TEXT,
    NUMBERS,
    TIMES,
    st.sampled_from(["gold", "GOLD", "Select", "yes", "mql", "Lost", "keep", "'=1+1", "=1+1", "-x"]),
    st.integers(min_value=0, max_value=3).map(lambda n: "x" * [255, 256, 100_001, MAX_CSV_ROW_BYTES][n]),
)
COLUMNS = HEADER.split(",")
GOOD = [
    "a1",
    "a@x.example",
    "150",
    "2.5",
    "2000",
    "yes",
    "2024-01-02",
    "silver",
    "2024-01-01T00:00:00Z",
    "",
    "",
]


@st.composite
def one_odd_cell(draw: Any) -> list[str]:
    """A good row (of one of a few leads) with one cell replaced."""
    cells = list(GOOD)
    cells[0] = draw(st.sampled_from(["a1", "a2", "a3", "keep"]))
    cells[draw(st.integers(min_value=0, max_value=len(cells) - 1))] = draw(CELL)
    return cells


ROW = st.one_of(
    one_odd_cell(),
    one_odd_cell(),
    st.lists(CELL, min_size=len(COLUMNS), max_size=len(COLUMNS)),  # the right number of cells
    st.lists(CELL, max_size=len(COLUMNS) + 2),  # ragged
)
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


@st.composite
def csv_files(draw: Any) -> bytes:
    """A CSV file: the header, then rows written by the csv module, raw
    garbage lines, blank lines; sometimes a BOM, odd line ends, no final
    line break, or bytes that are not UTF-8."""
    end = draw(LINE_END)
    lines = [HEADER]
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(["row", "row", "row", "raw", "blank"]))
        if kind == "row":
            cells = draw(ROW)
            lines.append(
                ",".join('"' + c.replace('"', '""') + '"' if draw(st.booleans()) else c for c in cells)
            )
        elif kind == "raw":
            lines.append(draw(ODD_TEXT))
        else:
            lines.append("")
    body = end.join(lines) + draw(st.sampled_from([end, ""]))
    data = body.encode("utf-8")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        cut = draw(st.integers(min_value=0, max_value=len(data)))
        data = data[:cut] + draw(st.sampled_from([b"\xff", b"\xe9", b"\xed\xa0\x80", b"\xc3"])) + data[cut:]
    return data


OPTIONS = st.lists(
    st.one_of(
        st.sampled_from(
            [
                ("--at-column", "at"),
                ("--stage-column", "stage"),
                ("--skip-bad", "{rejects}"),
                ("--date-format", "%Y-%m-%d"),
                ("--null", "N/A"),
            ]
        ),
        st.tuples(st.just("--date-format"), st.text(alphabet="%YmdHMSzZpI -/:T\x00é", max_size=12)),
        st.tuples(st.just("--null"), CELL),
    ),
    unique=True,
    max_size=3,
)


@pytest.fixture
def attacked(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """One database for a whole hypothesis run (the examples build on it)."""
    seeded(db_url)
    yield db_url, tmp_path


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=csv_files(), options=OPTIONS)
def test_odd_files_never_crash_and_a_refusal_changes_nothing(
    attacked: tuple[str, Path], data: bytes, options: list[tuple[str, str]]
) -> None:
    url, folder = attacked
    path = folder / "attack.csv"
    path.write_bytes(data)
    rejects = folder / "rejects.csv"
    rejects.unlink(missing_ok=True)
    extra = [part.replace("{rejects}", str(rejects)) for option in options for part in option]
    before = dump(url)
    result = invoke(url, path, *extra)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 2), result.output
    event(f"exit {result.exit_code}")
    if result.exit_code == 2:
        *listed, last = result.stderr.splitlines()
        assert last.startswith("error: "), result.stderr
        # before it, only the listing of bad rows, a line each
        assert all(line.startswith((f"{path}: line ", "… and ")) for line in listed), result.stderr
        assert dump(url) == before
        return
    if rejects.exists():  # what was set aside reads back as a CSV file with a reason
        with rejects.open(newline="", encoding="utf-8") as handle:
            written = list(csv.reader(handle))
        assert written[0][-1] in ("reason", "import_reason") and len(written) >= 2
        assert all("\n" not in row[-1] and "\r" not in row[-1] for row in written[1:])
    with shop(url) as engine:
        assert engine.verify() == []


def test_a_database_changed_between_the_passes_imports_nothing(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big file is judged again while it is applied; a row that turned bad
    in between (another process wrote its lead) stops the import whole,
    even with --skip-bad, whose file was written from the first pass."""
    import saleflow.importing.run as importer

    monkeypatch.setattr(importer, "KEPT_ROWS", 0)
    seeded(sqlite_url)
    path = tmp_path / "race.csv"
    rows = [_row(id=f"r{n}", at=f"2024-01-0{n}") for n in range(1, 6)] + [_row(id="r2", employees="many")]
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    calls: list[int] = []

    def progress(size: int) -> None:
        calls.append(size)
        if len(calls) == 3:  # the first pass has judged the file; another process creates r4
            with shop(sqlite_url) as other:
                other.add_lead("r4", flow="shop", at=datetime(2024, 3, 1, tzinfo=UTC))

    with shop(sqlite_url) as engine:
        with pytest.raises(BadInput, match=r"or the database changed during the import \(line 5"):
            engine.import_csv(
                path,
                flow="shop",
                id_column="id",
                at_column="at",
                chunk=2,
                skip_bad=tmp_path / "rejects.csv",
                progress=progress,
            )
        assert sorted(lead.id for lead in engine.leads(flow="shop")) == ["keep", "r4"]
        assert "many" in (tmp_path / "rejects.csv").read_text(encoding="utf-8")
        assert engine.verify() == []


def test_skip_bad_onto_the_input_by_another_name_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    """The rejects file is written while the input is read: a link to the
    input would truncate it."""
    seeded(sqlite_url)
    path = tmp_path / "mixed.csv"
    content = f"{HEADER}\n{_row(id='good')}\n{_row(id='bad', employees='many')}\n"
    path.write_text(content, encoding="utf-8")
    (tmp_path / "link.csv").symlink_to(path)
    os.link(path, tmp_path / "hard.csv")
    before = dump(sqlite_url)
    for other in ("link.csv", "hard.csv", "./mixed.csv"):
        result = invoke(sqlite_url, path, "--skip-bad", str(tmp_path / other))
        assert result.exit_code == 2
        assert "--skip-bad must name another file than the one imported" in one_sentence(result)
    assert path.read_text(encoding="utf-8") == content
    assert dump(sqlite_url) == before


def test_a_file_name_that_is_not_utf8_goes_into_the_history_as_text(db_url: str, tmp_path: Path) -> None:
    """The file's name is part of an `import` move's reason: a name whose
    bytes are not UTF-8 must not fail the transaction at the database."""
    seeded(db_url)
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.csv"))
    path.write_text(f"{HEADER}\n{_row(id='n9', stage='known')}\n", encoding="utf-8")
    with shop(db_url) as engine:
        assert engine.import_csv(path, flow="shop", id_column="id", stage_column="stage").placed == 1
        (entry,) = engine.history("n9")
        assert entry.reason == "caf\ufffd.csv line 2"
        assert engine.verify() == []


@pytest.mark.parametrize(
    ("date_format", "fragment"),
    [
        ("%Y-%m-%d %Y", "is not a valid format"),
        ("%d\udcff%m", "--date-format is not valid Unicode"),
        ("%d\x00%m", "--date-format holds a NUL byte"),
        ("%Y" * 200, "--date-format is 400 characters long"),
    ],
)
def test_an_odd_date_format_is_one_sentence(
    sqlite_url: str, tmp_path: Path, date_format: str, fragment: str
) -> None:
    seeded(sqlite_url)
    path = tmp_path / "ok.csv"
    path.write_text(f"{HEADER}\n{_row()}\n", encoding="utf-8")
    with shop(sqlite_url) as engine, pytest.raises(BadInput, match=fragment):
        engine.import_csv(path, flow="shop", id_column="id", at_column="at", date_format=date_format)


def test_a_reason_quoting_a_cell_with_line_breaks_stays_one_line(db_url: str, tmp_path: Path) -> None:
    seeded(db_url)
    path = tmp_path / "breaks.csv"
    row = _row(id="n2", tier="gold\nor\u2028\x1esilver")
    path.write_text(f"{HEADER}\n{row}\n", encoding="utf-8")
    before = dump(db_url)
    result = invoke(db_url, path)
    assert result.exit_code == 2
    message = one_sentence(result)
    assert '"gold\\nor\\u2028\\x1esilver" is not' in message
    assert dump(db_url) == before
