"""Bad input through the CLI, table-driven, on SQLite and PostgreSQL.

Every case asserts the exit code of SPEC §4 (1 rejected, 2 bad input, 3 not
found), one clear sentence on stderr and no traceback, and that the database
is unchanged, row for row, in every table.

The cases share one database per backend (it must not change, so sharing it
is part of the test); a case may prepare something before it runs and undo
it afterwards (a read-only file, a newer schema stamp).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from saleflow import Engine
from saleflow.cli import main

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)

INVALID_FLOW = """\
flow broken
field budget money
team sales "Sales" {
  stage start initial
  stage won when budjet >= 10
}
"""


@dataclass
class Db:
    """The shared database of one backend, and a scratch folder."""

    backend: str
    url: str
    folder: Path
    admin: str | None = None  # PostgreSQL: the server's admin URL
    name: str | None = None  # PostgreSQL: the database's name


def _pg_admin_args(url: str, dbname: str | None = None) -> dict[str, Any]:
    parsed = make_url(url)
    args: dict[str, Any] = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "user": parsed.username or "postgres",
        "dbname": dbname or parsed.database or "postgres",
        "autocommit": True,
    }
    if parsed.password:
        args["password"] = parsed.password
    return args


def _pg_admin(db: Db, sql: str) -> None:
    import psycopg

    assert db.admin is not None
    with psycopg.connect(**_pg_admin_args(db.admin)) as conn:
        conn.execute(sql)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Db]:
    folder = tmp_path_factory.mktemp("bad_input")
    if request.param == "sqlite":
        found = Db("sqlite", f"sqlite:///{folder / 'saleflow.db'}", folder)
    else:
        admin = str(request.getfixturevalue("pg_server"))
        name = f"saleflow_test_{uuid.uuid4().hex[:12]}"
        found = Db("postgresql", "", folder, admin, name)
        _pg_admin(found, f'CREATE DATABASE "{name}"')
        found.url = (
            make_url(admin).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
        )
    engine = Engine.open(THE_MODEL, db=found.url, now=T0, actor="setup")
    engine.add_lead("acme", email="cto@acme.example", employees=800)
    engine.record("acme", "web_visit", at=T0)
    engine.close()
    try:
        yield found
    finally:
        if found.name is not None:
            _pg_admin(found, f'DROP DATABASE IF EXISTS "{found.name}" WITH (FORCE)')


def dump(url: str) -> dict[str, list[str]]:
    """Every row of every table, in a stable order."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(inspect(conn).get_table_names())
            return {
                table: sorted(repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"')))
                for table in tables
            }
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------
# preparing and undoing a case
# ---------------------------------------------------------------------------

Hook = Callable[[Db], None]


def _immutable(path: Path, on: bool) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True).returncode == 0


def read_only_on(db: Db) -> None:
    if db.backend == "postgresql":
        _pg_admin(db, f'ALTER DATABASE "{db.name}" SET default_transaction_read_only = on')
        return
    path = db.folder / "saleflow.db"
    os.chmod(path, 0o444)
    if os.access(path, os.W_OK) and not _immutable(path, True):  # root ignores modes
        os.chmod(path, 0o644)
        pytest.skip("cannot make a file read-only for this user")


def read_only_off(db: Db) -> None:
    if db.backend == "postgresql":
        _pg_admin(db, f'ALTER DATABASE "{db.name}" RESET default_transaction_read_only')
        return
    path = db.folder / "saleflow.db"
    _immutable(path, False)
    os.chmod(path, 0o644)


def _stamp(db: Db, revision: str) -> None:
    engine = create_engine(db.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def newer_schema_on(db: Db) -> None:
    _stamp(db, "9999")


def newer_schema_off(db: Db) -> None:
    _stamp(db, "0001")


def _set_stage(db: Db, stage: str) -> None:
    engine = create_engine(db.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE leads SET stage = :s WHERE id = 'acme'"), {"s": stage})
    finally:
        engine.dispose()


def strand(db: Db) -> None:
    """Put "acme" in a stage its flow version does not have (behind saleflow's back)."""
    _set_stage(db, "limbo")


def unstrand(db: Db) -> None:
    _set_stage(db, "nurturing")


def write_files(db: Db) -> None:
    (db.folder / "broken.flow").write_text(INVALID_FLOW, encoding="utf-8")
    (db.folder / "empty.flow").write_text("\n", encoding="utf-8")
    (db.folder / "latin1.flow").write_bytes("flow caf\xe9\n".encode("latin-1"))
    (db.folder / "a_folder.flow").mkdir(exist_ok=True)


# ---------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------

USAGE = "usage"  # click's own usage errors, as one "error: … (see '… --help')" line
DIAGNOSTICS = "diagnostics"  # an invalid flow: its diagnostics, then "error: …"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    code: int
    fragment: str
    style: str = "sentence"
    setup: Hook | None = None
    teardown: Hook | None = None
    env: dict[str, str] = field(default_factory=dict)
    db: str | None = None  # another --db URL ({folder} is filled in)


def case(command: str, *, code: int, fragment: str, **more: Any) -> Case:
    """A case from its command line, quoted as in a shell."""
    return Case(tuple(shlex.split(command)), code, fragment, **more)


CASES: dict[str, Case] = {
    # not found: 3
    "unknown lead (show)": case("show nobody", code=3, fragment='lead "nobody" does not exist'),
    "unknown lead (history)": case("history nobody", code=3, fragment='lead "nobody" does not exist'),
    "unknown lead (event)": case("event nobody web_visit", code=3, fragment='"nobody" does not exist'),
    "unknown lead (set)": case("lead set nobody need=yes", code=3, fragment='"nobody" does not exist'),
    "unknown lead (advance)": case("advance nobody", code=3, fragment='"nobody" does not exist'),
    "unknown flow": case("lead add new-1 --flow nope", code=3, fragment='flow "nope" is not deployed'),
    "unknown flow (advance --all)": case("advance --all --flow nope", code=3, fragment='"nope"'),
    "unknown flow (tick)": case("tick --flow nope", code=3, fragment='flow "nope" is not deployed'),
    "unknown stage": case("advance acme --to sqll", code=3, fragment='no stage "sqll"; did you mean "sql"?'),
    "unknown stage (forced)": case(
        "advance acme --to heaven --force --reason x", code=3, fragment='no stage "heaven"'
    ),
    "unknown event": case(
        "event acme web_vist", code=3, fragment='no event "web_vist"; did you mean "web_visit"?'
    ),
    "unknown field (set)": case("lead set acme budjet=5", code=3, fragment='no field "budjet"'),
    "unknown field (add)": case("lead add new-2 --set budjet=5", code=3, fragment='no field "budjet"'),
    "unknown stage (leads)": case("leads --stage sqll", code=3, fragment='stage "sqll"; did you mean "sql"?'),
    "unknown flow (leads)": case("leads --flow nope", code=3, fragment='flow "nope" is not deployed'),
    "unknown team": case("leads --team nobody", code=3, fragment='team "nobody"'),
    # bad input: 2
    "wrong type (int)": case("lead set acme employees=many", code=2, fragment='"employees" is int; "many"'),
    "wrong type (fraction for int)": case("lead set acme employees=2.5", code=2, fragment="whole number"),
    "wrong type (bool)": case("lead set acme need=perhaps", code=2, fragment="not true or false"),
    "wrong type (money)": case("lead set acme budget=lots", code=2, fragment="not a number"),
    "wrong type, nothing half-set": case(
        "lead set acme company=Acme employees=many", code=2, fragment="employees"
    ),
    "value outside an enum": case("lead set acme industry=mining", code=2, fragment="one of [saas"),
    "enum on add, no lead left": case(
        "lead add new-3 --set email=a@b.c --set authority=ceo", code=2, fragment="authority"
    ),
    "a lead added twice": case("lead add acme", code=2, fragment='lead "acme" already exists'),
    "an empty lead id": case("lead add ' '", code=2, fragment="must not be empty"),
    "force without a reason": case("advance acme --to sql --force", code=2, fragment="needs a reason"),
    "force with a blank reason": case(
        "advance acme --to sql --force --reason '  '", code=2, fragment="needs a reason"
    ),
    "malformed --at": case("event acme web_visit --at yesterday", code=2, fragment="ISO 8601", style=USAGE),
    "malformed --at (lead set)": case(
        "lead set acme need=yes --at 2024-13-01", code=2, fragment="ISO 8601", style=USAGE
    ),
    "an --at out of range": case(
        "event acme web_visit --at 0001-01-01T00:00:00+01:00", code=2, fragment="out of range", style=USAGE
    ),
    "a --now out of range": case(
        "--now 9999-12-31T23:00:00-05:00 show acme", code=2, fragment="out of range", style=USAGE
    ),
    "malformed --now": case("--now soon show acme", code=2, fragment="ISO 8601", style=USAGE),
    "malformed SALEFLOW_NOW": case(
        "event acme web_visit", code=2, fragment="ISO 8601", style=USAGE, env={"SALEFLOW_NOW": "Tuesday"}
    ),
    "advance with ID and --all": case("advance acme --all", code=2, fragment="either a lead ID or --all"),
    "advance with neither": case("advance", code=2, fragment="either a lead ID or --all"),
    "advance --all --to": case("advance --all --to sql", code=2, fragment="do not go with --all"),
    "--count 0": case("event acme web_visit --count 0", code=2, fragment="--count", style=USAGE),
    "--count -3": case("event acme web_visit --count -3", code=2, fragment="--count", style=USAGE),
    "--count too large": case(
        "event acme web_visit --count 99999999999999999999", code=2, fragment="from 1 to 2147483647"
    ),
    "--count many": case("event acme web_visit --count many", code=2, fragment="--count", style=USAGE),
    "FIELD=VALUE without =": case("lead set acme budget", code=2, fragment='"budget" is not FIELD=VALUE'),
    "FIELD=VALUE without a field": case("lead set acme =5", code=2, fragment='"=5" is not FIELD=VALUE'),
    "--set without =": case("lead add new-4 --set oops", code=2, fragment='"oops" is not FIELD=VALUE'),
    "lead set with no assignment": case("lead set acme", code=2, fragment="Missing argument", style=USAGE),
    "an unknown option": case("show acme --colour", code=2, fragment="No such option", style=USAGE),
    "an invalid flow to deploy": case(
        "deploy '{folder}/broken.flow'",
        code=2,
        fragment="broken.flow is not a valid flow (1 error)",
        style=DIAGNOSTICS,
        setup=write_files,
    ),
    "a missing flow file": case("deploy '{folder}/missing.flow'", code=2, fragment="does not exist"),
    "an empty flow file": case(
        "deploy '{folder}/empty.flow'", code=2, fragment="is empty", setup=write_files
    ),
    "a flow file that is not UTF-8": case(
        "deploy '{folder}/latin1.flow'", code=2, fragment="not UTF-8", setup=write_files
    ),
    "a folder as flow file": case(
        "deploy '{folder}/a_folder.flow'", code=2, fragment="is a folder", setup=write_files
    ),
    "a missing flow file as --flow": case(
        "lead add new-5 --flow '{folder}/missing.flow'", code=2, fragment="does not exist"
    ),
    "an unreachable database": case(
        "show acme",
        code=2,
        fragment="cannot connect to the database",
        db="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
    ),
    "a database URL that is not one": case(
        "show acme", code=2, fragment="not a database URL", db="just words"
    ),
    "a database saleflow does not speak": case(
        "show acme", code=2, fragment="SQLite or PostgreSQL", db="mysql://r@h/d"
    ),
    "a database in a missing folder": case(
        "show acme", code=2, fragment="does not exist", db="sqlite:///{folder}/no/such/folder/x.db"
    ),
    "a read-only database": case(
        "lead set acme need=yes", code=2, fragment="read-only", setup=read_only_on, teardown=read_only_off
    ),
    "a database of a newer schema": case(
        "show acme",
        code=2,
        fragment="newer than this saleflow knows",
        setup=newer_schema_on,
        teardown=newer_schema_off,
    ),
    "a lead in a stage its version lacks (show)": case(
        "show acme", code=2, fragment='in stage "limbo"', setup=strand, teardown=unstrand
    ),
    "a lead in a stage its version lacks (event)": case(
        "event acme web_visit", code=2, fragment='in stage "limbo"', setup=strand, teardown=unstrand
    ),
    # rejected: 1
    "a gate that fails": case("advance acme --to opportunity", code=1, fragment='cannot enter "opportunity"'),
    "the next stage's gate fails": case(
        "advance acme", code=1, fragment='cannot enter "mql": score >= 60 is false'
    ),
    "a move the flow does not define": case(
        "advance acme --to closed_won", code=1, fragment="defines no such move"
    ),
    "an exit whose gate fails": case(
        "advance acme --to lost", code=1, fragment="lost_reason is set is false"
    ),
    "a move to where it is": case("advance acme --to nurturing", code=1, fragment="already in"),
}


def _format(value: str, db: Db) -> str:
    return value.replace("{folder}", str(db.folder))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_changes_nothing(db: Db, name: str) -> None:
    spec = CASES[name]
    url = _format(spec.db, db) if spec.db else db.url
    args = ["--db", url, "--now", T0.isoformat(), "--actor", "tester", *(_format(a, db) for a in spec.args)]
    if "SALEFLOW_NOW" in spec.env:
        args.remove("--now")
        args.remove(T0.isoformat())
    before = dump(db.url)
    if spec.setup:
        spec.setup(db)
    try:
        result = CliRunner().invoke(main, args, env=spec.env, catch_exceptions=False)
    finally:
        if spec.teardown:
            spec.teardown(db)
    after = dump(db.url)

    assert result.exit_code == spec.code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    if spec.style == USAGE:
        # click's usage errors too are one sentence, pointing at --help.
        assert len(lines) == 1, result.stderr
        message = lines[0]
        assert message.startswith("error: ") and "--help')" in message
    elif spec.style == DIAGNOSTICS:
        assert "error[" in result.stderr
        message = lines[-1]
        assert message.startswith("error: ")
    else:
        assert len(lines) == 1, result.stderr
        message = lines[0]
        assert message.startswith("error: ")
    assert spec.fragment in message, message
    assert result.stdout == ""
    assert after == before


def test_there_are_at_least_25_kinds() -> None:
    assert len(CASES) >= 25
    assert {c.code for c in CASES.values()} == {1, 2, 3}


def test_a_subprocess_sees_the_same(sqlite_url: str) -> None:
    """The installed command, not CliRunner: exit code and one line on stderr."""
    Engine.open(THE_MODEL, db=sqlite_url).close()
    before = dump(sqlite_url)
    command = Path(sys.executable).parent / "saleflow"
    if not command.exists():
        pytest.skip("the saleflow command is not installed next to this Python")
    done = subprocess.run(
        [str(command), "--db", sqlite_url, "event", "nobody", "web_visit"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 3, done.stderr
    assert done.stderr == 'error: lead "nobody" does not exist\n'
    assert dump(sqlite_url) == before


def test_a_reader_that_stops_early_is_no_error(sqlite_url: str) -> None:
    """`saleflow leads | head -1`: the closed pipe is neither an error message
    nor a traceback; the command exits as if killed by SIGPIPE (141)."""
    with Engine.open(THE_MODEL, db=sqlite_url) as engine:
        for n in range(3):
            engine.add_lead(f"pipe-{n}", email="x@y.z")
    command = Path(sys.executable).parent / "saleflow"
    if not command.exists():
        pytest.skip("the saleflow command is not installed next to this Python")
    proc = subprocess.Popen(
        [str(command), "--db", sqlite_url, "leads"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has started writing
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert stderr == ""


# ---------------------------------------------------------------------------
# Hardening (issue 8): each area adds its cases in its own block below.
# ---------------------------------------------------------------------------

# -- the flow language: numbers and sizes in flow files (check, deploy) ------

NUMBERS_FLOW = """\
flow numbers version {version}
field seats  int default {seats}
field budget money default {budget}
field rating number default {rating}
event call
score {{ +{points} each call }}
team sales {{
  stage new initial
  stage qualified when call in last {window} days >= 1 and seats < {compare}
    and at least {at_least} of {{ call >= 1 }} and days_since call <= {days}
  stage won final sla {sla} days capacity {capacity}
  target time in qualified <= {target_days} days
  target conversion new -> won >= {percent}%
}}
stage lost final  # {comment}
"""
FITTING = {
    "version": "1",
    "seats": "0",
    "budget": "0.5",
    "rating": "1",
    "points": "5",
    "window": "30",
    "compare": "100",
    "at_least": "1",
    "days": "14",
    "sla": "3",
    "capacity": "10",
    "target_days": "5",
    "percent": "20",
    "comment": "fine",
}
DIGITS_400 = "9" * 400
INF = "1" + "0" * 309 + ".0"  # 1e309, written out: a float() of it is inf
TWO_63 = str(2**63)
# (file, the slot made bad, the value, a fragment of the last diagnostic's count line)
NUMBER_SLOTS = {
    "version-2**63": ("version", TWO_63),
    "version-0": ("version", "0"),
    "capacity-400-digits": ("capacity", DIGITS_400),
    "capacity-past-a-billion": ("capacity", "1000000001"),
    "sla-400-digits": ("sla", DIGITS_400),
    "sla-1e309": ("sla", INF),
    "int-default-2**63": ("seats", TWO_63),
    "money-default-1e309": ("budget", INF),
    "number-default-400-digits": ("rating", DIGITS_400),
    "points-2**63": ("points", TWO_63),
    "window-400-digits": ("window", DIGITS_400),
    "compare-400-digits": ("compare", DIGITS_400),
    "compare-1e309": ("compare", INF),
    "at-least-2**63": ("at_least", TWO_63),
    "days-since-2**63": ("days", TWO_63),
    "target-days-1e309": ("target_days", INF),
    "target-percent-400-digits": ("percent", DIGITS_400),
    "number-of-5000-digits": ("capacity", "7" * 5000),
    "nul-in-a-comment": ("comment", "a\x00b"),
}


def write_number_flows(db: Db) -> None:
    """Flows with one number beyond its range each, and files too large to read."""
    for name, (slot, value) in NUMBER_SLOTS.items():
        text = NUMBERS_FLOW.format(**{**FITTING, slot: value})
        (db.folder / f"{name}.flow").write_text(text, encoding="utf-8")
    (db.folder / "fits.flow").write_text(NUMBERS_FLOW.format(**FITTING), encoding="utf-8")
    huge = db.folder / "huge.flow"
    if not huge.exists():
        with huge.open("wb") as file:  # sparse: 17 MiB that take no room
            file.write(b"flow huge\n")
            file.truncate(17 * 2**20)


FLOW_NUMBER_CASES: dict[str, Case] = {
    **{
        f"deploy a flow with {name}": case(
            f"deploy '{{folder}}/{name}.flow'",
            code=2,
            fragment=f"{name}.flow is not a valid flow",
            style=DIAGNOSTICS,
            setup=write_number_flows,
        )
        for name in NUMBER_SLOTS
    },
    "lead add --flow FILE with a 400-digit capacity": case(
        "lead add new-9 --flow '{folder}/capacity-400-digits.flow'",
        code=2,
        fragment="is not a valid flow",
        style=DIAGNOSTICS,
        setup=write_number_flows,
    ),
    "graph of a flow with version 2**63": case(
        "graph '{folder}/version-2**63.flow'",
        code=2,
        fragment="is not a valid flow",
        style=DIAGNOSTICS,
        setup=write_number_flows,
    ),
    "deploy a 17 MiB flow file": case(
        "deploy '{folder}/huge.flow'", code=2, fragment="larger than 16 MiB", setup=write_number_flows
    ),
    "check a 17 MiB flow file": case(
        "check '{folder}/huge.flow'", code=2, fragment="larger than 16 MiB", setup=write_number_flows
    ),
    "check /dev/zero": case("check /dev/zero", code=2, fragment="/dev/zero is larger than 16 MiB"),
    "deploy /dev/zero": case("deploy /dev/zero", code=2, fragment="/dev/zero is larger than 16 MiB"),
}
CASES.update(FLOW_NUMBER_CASES)


# test_bad_input_changes_nothing was parametrized before this block added its
# cases (a decorator reads CASES when the function is defined), so this block
# runs its own cases through it.
@pytest.mark.parametrize("name", list(FLOW_NUMBER_CASES))
def test_flow_numbers_change_nothing(db: Db, name: str) -> None:
    test_bad_input_changes_nothing(db, name)


def test_the_number_flows_fit_but_for_their_one_number(tmp_path: Path) -> None:
    """The flows above are refused for their one bad number, not for anything
    else: the same flow with every number in range checks clean."""
    from saleflow.check import check
    from saleflow.parse import parse_flow

    assert check(parse_flow(NUMBERS_FLOW.format(**FITTING))) == []
    db = Db("sqlite", "", tmp_path)
    write_number_flows(db)
    for name in NUMBER_SLOTS:
        result = CliRunner().invoke(main, ["check", str(tmp_path / f"{name}.flow")])
        assert result.exit_code == 1, (name, result.output)
        assert "Traceback" not in result.output
        errors = [line for line in result.output.splitlines() if "error[" in line]
        assert len(errors) == 1, (name, result.output)


# -- import: CSV files ---------------------------------------------------------

CASES.update({})

# -- runtime and CLI: values, times, ids, databases ------------------------------

CASES.update({})
