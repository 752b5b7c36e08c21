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
from conftest import dump
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from saleflow import Engine
from saleflow.cli.app import main

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
    from saleflow.store import SCHEMA_HEAD

    _stamp(db, SCHEMA_HEAD)


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
    # Python reads these as times; saleflow takes calendar dates only.
    "an --at in ISO's basic format": case(
        "event acme web_visit --at 43320301-01-01", code=2, fragment="ISO 8601", style=USAGE
    ),
    "an --at as a week date": case(
        "event acme web_visit --at 2026-W13-2", code=2, fragment="ISO 8601", style=USAGE
    ),
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
        code=5,
        fragment="cannot connect to the database",
        db="postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
    ),
    # the server answers and refuses for good: fix the URL (2), not retry (5)
    "a PostgreSQL database that does not exist": case(
        "show acme",
        code=2,
        fragment='database "saleflow_no_such_db" does not exist',
        db="postgresql+psycopg://postgres@127.0.0.1:5432/saleflow_no_such_db",
    ),
    "a PostgreSQL role that does not exist": case(
        "show acme",
        code=2,
        fragment='role "saleflow_no_such_role" does not exist',
        db="postgresql+psycopg://saleflow_no_such_role@127.0.0.1:5432/postgres",
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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Cases are named only once the whole module has run: the hardening
    blocks at its end add theirs after this test is defined."""
    if metafunc.function.__name__ == "test_bad_input_changes_nothing":
        metafunc.parametrize("name", list(CASES))


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
    assert {c.code for c in CASES.values()} == {1, 2, 3, 5}


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


def test_the_number_flows_fit_but_for_their_one_number(tmp_path: Path) -> None:
    """The flows above are refused for their one bad number, not for anything
    else: the same flow with every number in range checks clean."""
    from saleflow.check.rules import check
    from saleflow.language.parse import parse_flow

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

IMPORT_FILES: dict[str, bytes] = {
    "nul.csv": b"id,email\nnew-i1,ok@x.example\nnew-i2,a\x00b@x.example\n",
    "nul_id.csv": b"id,email\nnew-i1\x00,a@x.example\n",
    "int64.csv": b"id,employees\nnew-i1,18446744073709551616\n",
    "int63.csv": b"id,employees\nnew-i1,-9223372036854775809\n",
    "digits.csv": b"id,employees\nnew-i1," + b"9" * 4301 + b"\n",
    "float_int.csv": b"id,employees\nnew-i1,1e19\n",
    "inf.csv": b"id,budget\nnew-i1,1e309\n",
    "nan.csv": b"id,budget\nnew-i1,nan\n",
    "big_money.csv": b"id,budget\nnew-i1,5e18\n",
    "long_id.csv": b"id,email\n" + b"i" * 256 + b",a@x.example\n",
    "long_text.csv": b"id,email\nnew-i1," + b"e" * 100_001 + b"\n",
    "latin1.csv": b"id,email\nnew-i1,caf\xe9@x.example\n",
    "surrogate.csv": b"id,email\nnew-i1,\xed\xa0\x80@x.example\n",
    "long_line.csv": b"id,email\nnew-i1," + b"x" * (1 << 20) + b"\n",
    "year_9999.csv": b"id,email,at\nnew-i1,a@x.example,9999-12-31T23:59:59Z\n",
    "year_1800.csv": b"id,email,at\nnew-i1,a@x.example,1800-01-01\n",
    "past_last.csv": b"id,email,at\nnew-i1,a@x.example,9999-12-31T23:59:59.999999-05:00\n",
    "nul_stage.csv": b"id,email,stage\nnew-i1,a@x.example,s\x00ql\n",
    "good_and_bad.csv": b"id,employees\nnew-i1,5\nnew-i2,many\n",
}


def write_import_files(db: Db) -> None:
    for name, data in IMPORT_FILES.items():
        (db.folder / name).write_bytes(data)


def _import(file: str, more: str = "", **kwargs: Any) -> Case:
    command = f"import '{{folder}}/{file}' --flow the_model --id-column id {more}"
    return case(command, code=kwargs.pop("code", 2), setup=write_import_files, **kwargs)


CASES.update(
    {
        "import: a NUL byte in a text cell": _import(
            "nul.csv", fragment='line 3, column "email": the value holds a NUL byte'
        ),
        "import: a NUL byte in a lead id": _import("nul_id.csv", fragment="the lead id holds a NUL byte"),
        "import: an int of 2**64": _import(
            "int64.csv", fragment='field "employees" is int; "18446744073709551616" is out of range'
        ),
        "import: an int below -2**63": _import(
            "int63.csv", fragment='"-9223372036854775809" is out of range'
        ),
        "import: a 4,301-digit number": _import("digits.csv", fragment="4,301 characters long"),
        "import: 1e19 for an int": _import("float_int.csv", fragment='"1e19" is out of range'),
        "import: 1e309 money": _import("inf.csv", fragment="not a finite number"),
        "import: nan money": _import("nan.csv", fragment="not a finite number"),
        "import: money beyond the limit": _import("big_money.csv", fragment='"5e18" is out of range'),
        "import: a lead id of 256 characters": _import("long_id.csv", fragment="256 characters long"),
        "import: text beyond 100,000 characters": _import("long_text.csv", fragment="the limit is 100,000"),
        "import: a byte that is not UTF-8": _import("latin1.csv", fragment="is not UTF-8 text: line 2"),
        "import: an encoded surrogate": _import("surrogate.csv", fragment="is not UTF-8 text: line 2"),
        "import: a line over 1 MiB": _import("long_line.csv", fragment="line 2 is longer than 1,024 KiB"),
        "import: /dev/zero": case(
            "import /dev/zero --flow the_model --id-column id", code=2, fragment="not a regular file"
        ),
        "import: a time in year 9999": _import(
            "year_9999.csv",
            "--at-column at",
            fragment='column "at" 9999-12-31T23:59:59+00:00 is out of range',
        ),
        "import: a time in year 1800": _import("year_1800.csv", "--at-column at", fragment="out of range"),
        "import: a time past the last instant": _import(
            "past_last.csv", "--at-column at", fragment="out of range"
        ),
        "import: a NUL byte in a stage": _import(
            "nul_stage.csv", "--stage-column stage", fragment="the stage holds a NUL byte"
        ),
        "import: --skip-bad to a full disk": _import(
            "good_and_bad.csv", "--skip-bad /dev/full", fragment="cannot write /dev/full"
        ),
        "import: --skip-bad into a missing folder": _import(
            "good_and_bad.csv", "--skip-bad '{folder}/no/such/rejects.csv'", fragment="cannot write"
        ),
    }
)


def test_import_cases_are_many() -> None:
    assert len([name for name in CASES if name.startswith("import: ")]) >= 20


# -- runtime and CLI: values, times, ids, databases ------------------------------

_KEPT: dict[tuple[str, str], Any] = {}  # (database URL, what) -> the value a hook replaced


def _swap(db: Db, what: str, read: str, write: str, value: Any) -> None:
    """Replace a value of "acme" behind saleflow's back, keeping the stored one."""
    engine = create_engine(db.url)
    try:
        with engine.begin() as conn:
            _KEPT[(db.url, what)] = conn.execute(text(read)).scalar_one()
            conn.execute(text(write), {"v": value})
    finally:
        engine.dispose()


def _restore(db: Db, what: str, write: str) -> None:
    engine = create_engine(db.url)
    try:
        with engine.begin() as conn:
            conn.execute(text(write), {"v": _KEPT.pop((db.url, what))})
    finally:
        engine.dispose()


def _fields_sql(db: Db) -> tuple[str, str]:
    cast = "CAST(:v AS jsonb)" if db.backend == "postgresql" else ":v"
    read = "SELECT CAST(fields AS TEXT) FROM leads WHERE id = 'acme'"
    return read, f"UPDATE leads SET fields = {cast} WHERE id = 'acme'"


def corrupt_fields(db: Db) -> None:
    """acme's fields: a JSON list, not the object saleflow writes."""
    read, write = _fields_sql(db)
    _swap(db, "fields", read, write, "[1, 2]")


def uncorrupt_fields(db: Db) -> None:
    _restore(db, "fields", _fields_sql(db)[1])


def corrupt_fields_due(db: Db) -> None:
    """acme's fields corrupted, and acme due: `tick` visits only due leads
    (SPEC §8), so a lead that is not due is never read by it."""
    corrupt_fields(db)
    engine = create_engine(db.url)
    try:
        with engine.begin() as conn:
            _KEPT[(db.url, "due_at")] = conn.execute(
                text("SELECT due_at FROM leads WHERE id = 'acme'")
            ).scalar_one()
            conn.execute(text("UPDATE leads SET due_at = created_at WHERE id = 'acme'"))
    finally:
        engine.dispose()


def uncorrupt_fields_due(db: Db) -> None:
    _restore(db, "due_at", "UPDATE leads SET due_at = :v WHERE id = 'acme'")
    uncorrupt_fields(db)


_LAST_ENTRY = "lead_id = 'acme' AND seq = (SELECT max(seq) FROM journal WHERE lead_id = 'acme')"


def corrupt_time(db: Db) -> None:
    """acme's last journal entry dated 9999-12-31: out of every range saleflow writes."""
    far: Any = datetime(9999, 12, 31, tzinfo=UTC)
    if db.backend == "sqlite":
        far = "9999-12-31T00:00:00.000000+00:00"
    _swap(
        db,
        "at",
        f"SELECT at FROM journal WHERE {_LAST_ENTRY}",
        f"UPDATE journal SET at = :v WHERE {_LAST_ENTRY}",
        far,
    )


def uncorrupt_time(db: Db) -> None:
    _restore(db, "at", f"UPDATE journal SET at = :v WHERE {_LAST_ENTRY}")


CORRUPT = 'the database is corrupted: lead "acme"'
HUGE = "9" * 4301  # past int()'s 4,300 digits
FAR = "out of range"

CASES.update(
    {
        # integers beyond their column
        "migrate --version 2**63": case(
            f"lead migrate acme --version {2**63}", code=2, fragment="a flow version must be between 1 and"
        ),
        "migrate --version 2**31": case(
            f"lead migrate acme --version {2**31}", code=2, fragment="2,147,483,647"
        ),
        "migrate --version 0": case(
            "lead migrate acme --version 0", code=2, fragment="--version", style=USAGE
        ),
        "--count 2**63": case(
            f"event acme web_visit --count {2**63}", code=2, fragment="from 1 to 2147483647"
        ),
        "an int field of 2**63": case(f"lead set acme employees={2**63}", code=2, fragment=FAR),
        "an int field below -2**63": case(f"lead set acme employees={-(2**63) - 1}", code=2, fragment=FAR),
        "money beyond MAX_NUMBER": case("lead set acme budget=1e19", code=2, fragment=FAR),
        "money of 1e309": case("lead set acme budget=1e309", code=2, fragment="not a finite number"),
        "a 4,301-digit value": case(f"lead set acme employees={HUGE}", code=2, fragment=FAR),
        "a 4,301-digit value (money)": case(f"lead set acme budget=-{HUGE}", code=2, fragment=FAR),
        "a 4,301-digit value on add": case(f"lead add new-6 --set employees={HUGE}", code=2, fragment=FAR),
        # text a database cannot hold
        "a NUL in a field value": case("lead set acme company=a\x00b", code=2, fragment="NUL byte"),
        "a NUL in a field name": case("lead set acme comp\x00any=x", code=2, fragment="NUL byte"),
        "a NUL in a lead id": case("show a\x00b", code=2, fragment="NUL byte"),
        "a NUL in --content": case("event acme web_visit --content x\x00", code=2, fragment="NUL byte"),
        "a NUL in --reason": case(
            "advance acme --to sql --force --reason x\x00", code=2, fragment="NUL byte"
        ),
        "a lead id that is not UTF-8 (show)": case("show \udcff", code=2, fragment="not valid Unicode"),
        "a lead id that is not UTF-8 (add)": case("lead add x\udcffy", code=2, fragment="not valid Unicode"),
        "a lead id that is not UTF-8 (event)": case(
            "event \udcff web_visit", code=2, fragment="not valid Unicode"
        ),
        "a channel that is not UTF-8": case(
            "event acme web_visit --channel \udcff", code=2, fragment="not valid Unicode"
        ),
        "a field value that is not UTF-8": case(
            "lead set acme company=\udcff", code=2, fragment="not valid Unicode"
        ),
        "a stage that is not UTF-8 (leads)": case(
            "leads --stage \udcff", code=2, fragment="not valid Unicode"
        ),
        "a lead id too long": case(f"lead add {'x' * 256}", code=2, fragment="the limit is 255"),
        # times at the edges
        "--at in year 9000": case("event acme web_visit --at 9000-01-01", code=2, fragment=FAR, style=USAGE),
        "--at before 1900": case("lead set acme need=yes --at 1899-12-31", code=2, fragment=FAR, style=USAGE),
        "lead add --at the last microsecond": case(
            "lead add new-7 --at 9999-12-31T23:59:59.999999Z", code=2, fragment=FAR, style=USAGE
        ),
        "--now in year 9999": case(
            "show acme", code=2, fragment=FAR, style=USAGE, env={"SALEFLOW_NOW": "9999-12-31"}
        ),
        "report --until 9999-12-31": case("report --until 9999-12-31", code=2, fragment=FAR),
        "report --since 0001-01-01": case("report --since 0001-01-01", code=2, fragment=FAR),
        "report --until beyond year 9999": case("report --until 99999-01-01", code=2, fragment="ISO 8601"),
        # database URLs, one sentence each
        "a SQLite URL with a host and port": case(
            "show acme", code=2, fragment="names a host", db="sqlite://host:99/x.db"
        ),
        "a SQLite URL with a host": case(
            "show acme", code=2, fragment="names a host", db="sqlite://host/x.db"
        ),
        "a SQLite URL with a bad argument": case(
            "show acme", code=2, fragment="cannot use the database", db="sqlite:///{folder}/x.db?timeout=soon"
        ),
        "a database URL with a NUL": case(
            "show acme", code=2, fragment="NUL byte", db="sqlite:///{folder}/x\x00.db"
        ),
        "a PostgreSQL URL with a bad port": case(
            "show acme", code=2, fragment="not a database URL", db="postgresql://u@h:port/d"
        ),
        # a lead that exists: bad input (2), as everywhere (README, "Exit codes")
        "a lead added twice, with fields": case(
            "lead add acme --set employees=5", code=2, fragment='lead "acme" already exists'
        ),
        # rows edited behind saleflow's back
        **{
            f"corrupted fields ({command})": case(
                command, code=2, fragment=CORRUPT, setup=corrupt_fields, teardown=uncorrupt_fields
            )
            for command in ("show acme", "leads", "history acme", "advance --all", "audit verify")
        },
        "corrupted fields (tick)": case(
            "tick", code=2, fragment=CORRUPT, setup=corrupt_fields_due, teardown=uncorrupt_fields_due
        ),
        **{
            f"a corrupted time ({command})": case(
                command, code=2, fragment=CORRUPT, setup=corrupt_time, teardown=uncorrupt_time
            )
            # (tick and advance --all read no journal entry's time: a batch
            # reads only each lead's newest lead_seq and hash, to chain on)
            for command in ("history acme", "report", "audit verify")
        },
    }
)


# -- the change feed (`saleflow changes`, SPEC §6) ------------------------------

CASES.update(
    {
        "changes: an unknown --kind": case(
            "changes --kind moves",
            code=2,
            fragment='no kind of entry is called "moves" (did you mean "moved"?); the kinds are created, '
            "set, event, moved, migrated, sla_breach",
        ),
        "changes --follow: an unknown --kind": case(
            "changes --follow --kind nope", code=2, fragment="the kinds are created, set, event"
        ),
        "changes: a negative --since": case(
            "changes --since -1", code=2, fragment="--since must be a whole number from 0 to"
        ),
        "changes: --since 2**63": case(
            f"changes --since {2**63}",
            code=2,
            fragment="to 9,223,372,036,854,775,807, not 9,223,372,036,854,775,808",
        ),
        "changes: a 4,301-digit --since": case(
            f"changes --since {HUGE}", code=2, fragment="not a number of 4,301 digits"
        ),
        "changes: --limit 0": case(
            "changes --limit 0", code=2, fragment="--limit must be a whole number from 1"
        ),
        "changes: --limit -5": case(
            "changes --limit -5", code=2, fragment="--limit must be a whole number from 1"
        ),
        "changes: a --since that is no number": case(
            "changes --since soon", code=2, fragment='--since takes a whole number, not "soon"'
        ),
        "changes: a --since with a fraction": case(
            "changes --since 1.5", code=2, fragment='--since takes a whole number, not "1.5"'
        ),
        "changes: a --limit that is no number": case(
            "changes --limit ten", code=2, fragment='--limit takes a whole number, not "ten"'
        ),
        "changes: a --since in other digits": case(
            "changes --since \u0661\u0662", code=2, fragment="--since takes a whole number"
        ),
        "changes: a NUL in --since": case(
            "changes --since 1\x00", code=2, fragment="--since takes a whole number"
        ),
        "changes: a NUL in --kind": case("changes --kind mo\x00ved", code=2, fragment="NUL byte"),
        "changes: a NUL in --flow": case("changes --flow the\x00model", code=2, fragment="NUL byte"),
        "changes: a --kind that is not UTF-8": case(
            "changes --kind \udcff", code=2, fragment="not valid Unicode"
        ),
        "changes: an unknown --flow": case(
            "changes --flow nope", code=3, fragment='flow "nope" is not deployed'
        ),
        "changes --follow: an unknown --flow": case(
            "changes --follow --flow nope", code=3, fragment='flow "nope" is not deployed'
        ),
    }
)


# -- export for BI (saleflow export): tables, formats, periods, output files --

CASES.update(
    {
        "export: an unknown table": case(
            "export deals", code=2, fragment="'journal', 'leads', 'stages'", style=USAGE
        ),
        "export: an unknown --format": case(
            "export journal --format xlsx", code=2, fragment="'csv', 'jsonl'", style=USAGE
        ),
        "export: --since after --until": case(
            "export stages --since 2024-06-01 --until 2024-05-01",
            code=2,
            fragment="--until 2024-05-01 is before --since 2024-06-01",
        ),
        "export: --until in year 9999": case("export journal --until 9999-12-31", code=2, fragment=FAR),
        "export: --since 0001-01-01": case("export leads --since 0001-01-01", code=2, fragment=FAR),
        "export: --since beyond year 9999": case(
            "export stages --since 99999-01-01", code=2, fragment="ISO 8601"
        ),
        "export: --since not a date": case("export journal --since yesterday", code=2, fragment="ISO 8601"),
        "export: --until as a week date": case(
            "export leads --until 2026-W13-2", code=2, fragment="ISO 8601"
        ),
        "export: a NUL in --since": case("export journal --since 2024-05-01\x00", code=2, fragment="NUL"),
        "export: a NUL in -o": case("export journal -o '{folder}/out\x00.csv'", code=2, fragment="NUL byte"),
        "export: -o into a missing folder": case(
            "export stages -o '{folder}/no/such/stages.csv'", code=2, fragment="does not exist"
        ),
        "export: -o a folder": case("export leads -o '{folder}'", code=2, fragment="is a folder"),
        "export: -o a full disk": case(
            "export journal -o /dev/full", code=2, fragment="cannot write /dev/full"
        ),
        "export: an unknown --flow": case(
            "export leads --flow nope", code=3, fragment='flow "nope" is not deployed'
        ),
        "export: an unknown --flow (stages)": case(
            "export stages --flow nope", code=3, fragment='flow "nope" is not deployed'
        ),
        "export: a NUL in --flow": case("export journal --flow the\x00model", code=2, fragment="NUL byte"),
        "export: corrupted fields": case(
            "export leads", code=2, fragment=CORRUPT, setup=corrupt_fields, teardown=uncorrupt_fields
        ),
        "export: a corrupted time (journal)": case(
            "export journal", code=2, fragment=CORRUPT, setup=corrupt_time, teardown=uncorrupt_time
        ),
        "export: a corrupted time (stages)": case(
            "export stages", code=2, fragment=CORRUPT, setup=corrupt_time, teardown=uncorrupt_time
        ),
    }
)


# ---------------------------------------------------------------------------
# deploy --dry-run and migrate (SPEC §7): the shared database has the_model
# version 1 only, so every --map-stage here names something missing.
# ---------------------------------------------------------------------------


def write_changed_model(db: Db) -> None:
    """the_model with a changed threshold that still says version 1."""
    source = Path(THE_MODEL).read_text(encoding="utf-8").replace("when score >= 60", "when score >= 70")
    (db.folder / "changed_v1.flow").write_text(source, encoding="utf-8")


CASES.update(
    {
        "deploy --dry-run: a changed flow that keeps its version": case(
            "deploy '{folder}/changed_v1.flow' --dry-run",
            code=2,
            fragment='flow "the_model" version 1 is already deployed with other content; raise its version to 2',
            setup=write_changed_model,
        ),
        "deploy --dry-run --json: a changed flow that keeps its version": case(
            "deploy '{folder}/changed_v1.flow' --dry-run --json",
            code=2,
            fragment="raise its version to 2",
            setup=write_changed_model,
        ),
        "deploy --dry-run: an invalid flow": case(
            "deploy '{folder}/broken.flow' --dry-run",
            code=2,
            fragment="broken.flow is not a valid flow (1 error)",
            style=DIAGNOSTICS,
            setup=write_files,
        ),
        "migrate: an unknown flow": case(
            "migrate --flow nope", code=3, fragment='flow "nope" is not deployed'
        ),
        "migrate --dry-run: an unknown flow": case(
            "migrate --flow nope --dry-run", code=3, fragment='flow "nope" is not deployed'
        ),
        "migrate --to-version unknown": case(
            "migrate --flow the_model --to-version 7",
            code=3,
            fragment="has no version 7 (deployed versions: 1)",
        ),
        "migrate --to-version 0": case(
            "migrate --flow the_model --to-version 0", code=2, fragment="--to-version", style=USAGE
        ),
        "migrate --to-version 2**31": case(
            f"migrate --flow the_model --to-version {2**31}", code=2, fragment="--to-version", style=USAGE
        ),
        "migrate --to-version 2**63": case(
            f"migrate --flow the_model --to-version {2**63}", code=2, fragment="--to-version", style=USAGE
        ),
        "migrate --to-version many": case(
            "migrate --flow the_model --to-version many", code=2, fragment="--to-version", style=USAGE
        ),
        "migrate --map-stage to a stage the version lacks": case(
            "migrate --flow the_model --map-stage lead=heaven",
            code=2,
            fragment='flow "the_model" version 1 has no stage "heaven"',
        ),
        "migrate --map-stage to a misspelt stage": case(
            "migrate --flow the_model --map-stage lead=nurturng --dry-run",
            code=2,
            fragment='did you mean "nurturing"?',
        ),
        "migrate --map-stage from a stage no older version has": case(
            "migrate --flow the_model --map-stage limbo=lead", code=2, fragment='has a stage "limbo"'
        ),
        "migrate --map-stage without =": case(
            "migrate --flow the_model --map-stage lead", code=2, fragment='--map-stage "lead" is not OLD=NEW'
        ),
        "migrate --map-stage with an empty side": case(
            "migrate --flow the_model --map-stage =lead", code=2, fragment="is not OLD=NEW"
        ),
        "migrate --map-stage twice for one stage": case(
            "migrate --flow the_model --map-stage lead=mql --map-stage lead=sql",
            code=2,
            fragment='maps stage "lead" twice',
        ),
        "migrate --map-stage with a NUL": case(
            "migrate --flow the_model --map-stage le\x00ad=mql", code=2, fragment="NUL byte"
        ),
        "migrate --map-stage of 300 characters": case(
            f"migrate --flow the_model --map-stage {'x' * 300}=mql", code=2, fragment="the limit is 255"
        ),
        "migrate --flow with a NUL": case("migrate --flow a\x00b", code=2, fragment="NUL byte"),
    }
)


# -- ids that would display as something else (Trojan Source) -------------------

CASES.update(
    {
        "a right-to-left override in a lead id": case(
            "lead add a\u202eb", code=2, fragment="a bidirectional control"
        ),
        "a bidi isolate in a stage name": case(
            "advance acme --to s\u2066ql", code=2, fragment="a bidirectional control"
        ),
    }
)
