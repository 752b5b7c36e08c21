"""Upgrading a database written by the audit-table code to the journal
(Alembic revision 0003, docs/journal.md "Upgrade in place").

Real files and a real PostgreSQL server, never mocks.  The sources are
`tests/fixtures/schema_000*.db`, written by the audit-table code
(`tests/fixtures/schema_0001.py`, `schema_0002_backdated.py`): copies are
opened with the new code on
SQLite, and their rows are loaded into a 0001 (or 0002) schema on
PostgreSQL and opened there.  Each upgrade must carry every old audit entry,
event and SLA breach into the journal, pass `audit verify`, and give the
reports the 0002 code printed for the same files
(`tests/fixtures/schema_000*.report.json`, `tests/fixtures/report_0001.py`).
An old chain that does not verify refuses the upgrade and leaves the
database as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import dump
from sqlalchemy import create_engine, text

from saleflow import Engine
from saleflow.cli.app import main
from saleflow.errors import StoreError
from saleflow.journal import GENESIS_HASH, JournalEntry, key_fingerprint
from saleflow.store import SCHEMA_HEAD, open_store
from saleflow.store.connect import make_engine, parse_url

FIXTURES = Path(__file__).parent / "fixtures"
OLD_TABLES = ("flows", "leads", "events", "audit", "waiting", "sla_breaches")
MOVES = ("created", "moved", "migrated")
# The databases written by the audit-table code, by short name.
FILES = {"demo": "schema_0001_demo", "rich": "schema_0001_rich", "backdated": "schema_0002_backdated"}
KEY_VARIABLE = "SALEFLOW_AUDIT_KEY"


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def source(name: str) -> Path:
    return FIXTURES / f"{FILES[name]}.db"


def copy_fixture(name: str, folder: Path) -> Path:
    path = folder / f"{name}.db"
    shutil.copy(FIXTURES / f"{FILES[name]}.db", path)
    return path


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def old_rows(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of the 0001 tables of the SQLite file at `path`, read with
    plain sqlite3 (no saleflow code), times as UTC datetimes and JSON parsed."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        tables = {
            table: [dict(row) for row in con.execute(f'SELECT * FROM "{table}"')] for table in OLD_TABLES
        }
    finally:
        con.close()
    times = ("at", "entered_at", "due_at", "detected_at", "created_at", "updated_at", "since", "deployed_at")
    for rows in tables.values():
        for row in rows:
            for column in times:
                if column in row:
                    row[column] = utc(row[column])
            for column in ("fields", "values"):
                if column in row:
                    row[column] = json.loads(row[column])
    return tables


def journal_rows(url: str) -> list[dict[str, Any]]:
    """The journal, in seq order, times as UTC datetimes and data parsed."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = [dict(row) for row in conn.execute(text("SELECT * FROM journal ORDER BY seq")).mappings()]
    finally:
        engine.dispose()
    for row in rows:
        row["at"], row["recorded_at"] = utc(row["at"]), utc(row["recorded_at"])
        if isinstance(row["data"], str):
            row["data"] = json.loads(row["data"])
    return rows


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def revision(url: str) -> str:
    return str(scalar(url, "SELECT version_num FROM alembic_version"))


def upgrade(url: str) -> None:
    """Open the database with the new code: that runs the migrations."""
    open_store(url).close()


def run_alembic(url: str, target: str) -> None:
    """Bring a database to `target` only, as `connect._migrate` does."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(parse_url(url))
    config = Config()
    config.set_main_option("script_location", "saleflow:migrations")
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, target)
    finally:
        engine.dispose()


def load_into(url: str, source: Path, schema: str) -> None:
    """A 0001 (or 0002) schema at `url` holding every row of the SQLite file
    `source`: what the old code would have written to PostgreSQL."""
    run_alembic(url, schema)
    con = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    engine = make_engine(parse_url(url))
    try:
        with engine.begin() as conn:
            for table in OLD_TABLES:
                cursor = con.execute(f'SELECT * FROM "{table}"')
                columns = [d[0] for d in cursor.description]
                rows = [dict(zip(columns, row, strict=True)) for row in cursor]
                if rows:
                    names = ", ".join(f'"{c}"' for c in columns)
                    values = ", ".join(f":{c}" for c in columns)
                    conn.execute(text(f'INSERT INTO "{table}" ({names}) VALUES ({values})'), rows)
            if conn.dialect.name == "postgresql":  # the old code's next event continues after these
                conn.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('events', 'id'), max(id)) FROM events "
                        "HAVING max(id) IS NOT NULL"
                    )
                )
    finally:
        engine.dispose()
        con.close()


def report(url: str, args: list[str], now: str) -> Any:
    result = CliRunner().invoke(main, ["--db", url, "--now", now, "report", "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------
# what every upgrade must give
# ---------------------------------------------------------------------------


def expected_move_data(entry: dict[str, Any]) -> dict[str, Any]:
    if entry["seq"] == 1:
        return {"fields": {}, "upgraded": True}
    if entry["kind"] == "migrate":
        return {"from_version": entry["values"]["from_version"], "to_version": entry["version"]}
    return {"values": entry["values"]}


def check_carried_over(old: dict[str, list[dict[str, Any]]], journal: list[dict[str, Any]]) -> None:
    """Every old audit entry, event, SLA breach and stored field set is in
    the journal, in a well-formed order, and nothing else is."""
    by_lead: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in journal:
        by_lead[row["lead_id"]].append(row)
    leads = {lead["id"]: lead for lead in old["leads"]}
    assert set(by_lead) == set(leads)
    with_fields = sum(1 for lead in old["leads"] if lead["fields"])
    assert len(journal) == len(old["audit"]) + len(old["events"]) + len(old["sla_breaches"]) + with_fields

    # seq runs 1, 2, 3… over the whole database, leads in id order; lead_seq per lead.
    assert [row["seq"] for row in journal] == list(range(1, len(journal) + 1))
    assert [row["lead_id"] for row in journal] == sorted(
        (row["lead_id"] for row in journal), key=lambda s: s.encode("utf-8")
    )
    for entries in by_lead.values():
        assert [e["lead_seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert entries[0]["prev_hash"] == GENESIS_HASH
        assert [e["prev_hash"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]

    # Old audit entries: one created/moved/migrated entry each, in order, content kept.
    audit: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in sorted(old["audit"], key=lambda e: (e["lead_id"], e["seq"])):
        audit[entry["lead_id"]].append(entry)
    for lead_id, entries in by_lead.items():
        moves = [e for e in entries if e["entry"] in MOVES]
        got = [
            (m["kind"], m["from_stage"], m["stage"], m["cycle"], m["at"], m["actor"], m["reason"])
            for m in moves
        ]
        assert got == [
            (a["kind"], a["from_stage"], a["to_stage"], a["cycle"], a["at"], a["actor"], a["reason"])
            for a in audit[lead_id]
        ], lead_id
        assert [(m["flow"], m["version"], m["data"]) for m in moves] == [
            (a["flow"], a["version"], expected_move_data(a)) for a in audit[lead_id]
        ], lead_id
        assert moves[0]["entry"] == "created" and entries[0] is moves[0]
        assert [m["entry"] for m in moves[1:]] == [
            "migrated" if a["kind"] == "migrate" else "moved" for a in audit[lead_id][1:]
        ]
        assert all(m["recorded_at"] == m["at"] for m in moves)

    # Events: every one, in time order, at the stage the lead was in; before a move at the same instant.
    events: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for event in sorted(old["events"], key=lambda e: (e["at"], e["id"])):
        events[event["lead_id"]].append(
            (event["name"], event["at"], event["channel"], event["content"], event["count"], event["cycle"])
        )
    breaches: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for breach in sorted(old["sla_breaches"], key=lambda b: (b["detected_at"], b["entered_at"])):
        breaches[breach["lead_id"]].append(
            (breach["stage"], breach["cycle"], breach["entered_at"], breach["due_at"], breach["detected_at"])
        )
    for lead_id, entries in by_lead.items():
        got_events, got_breaches = [], []
        stage = None
        for index, entry in enumerate(entries):
            if entry["entry"] in MOVES:
                stage = entry["stage"]
            elif entry["entry"] == "event":
                data = entry["data"]
                assert set(data) == {"event", "count", "channel", "content"}
                got_events.append(
                    (
                        data["event"],
                        entry["at"],
                        data["channel"],
                        data["content"],
                        data["count"],
                        entry["cycle"],
                    )
                )
                assert entry["stage"] == stage and entry["actor"] == "upgrade" and entry["kind"] is None
                later = [e for e in entries[index + 1 :] if e["entry"] in ("moved", "migrated")]
                assert all(e["at"] >= entry["at"] for e in later[:1]), (lead_id, entry)
            elif entry["entry"] == "sla_breach":
                data = entry["data"]
                got_breaches.append(
                    (
                        entry["stage"],
                        entry["cycle"],
                        utc(data["entered_at"]),
                        utc(data["due_at"]),
                        entry["at"],
                    )
                )
                assert entry["actor"] == "upgrade" and entry["kind"] is None
        assert got_events == events[lead_id], lead_id
        assert got_breaches == breaches[lead_id], lead_id

    # The stored fields: one set entry, last, saying where it came from.
    for lead_id, entries in by_lead.items():
        lead = leads[lead_id]
        sets = [e for e in entries if e["entry"] == "set"]
        if not lead["fields"]:
            assert sets == []
            continue
        assert sets == [entries[-1]]
        (entry,) = sets
        assert entry["data"] == {
            "fields": {name: [None, value] for name, value in lead["fields"].items()},
            "upgraded": True,
        }
        assert entry["at"] == max([lead["updated_at"]] + [e["at"] for e in entries[:-1]])
        assert (entry["stage"], entry["cycle"], entry["version"]) == (
            lead["stage"],
            lead["cycle"],
            lead["version"],
        )
        assert entry["reason"] and "0001" in entry["reason"]


def check_upgraded(url: str, old: dict[str, list[dict[str, Any]]], key: bytes | None = None) -> None:
    assert revision(url) == SCHEMA_HEAD  # 0003 and every revision after it
    assert scalar(url, "SELECT fingerprint FROM journal_seal WHERE id = 1") == key_fingerprint(key)
    journal = journal_rows(url)
    check_carried_over(old, journal)
    for row in journal:  # sealed by the live rules, with the live key
        entry = JournalEntry(**{name: row[name] for name in JournalEntry.__dataclass_fields__ if name in row})
        assert entry.compute_hash(key) == row["hash"], row
    with Engine.open(db=url) as engine:
        assert engine.verify() == []
    result = CliRunner().invoke(main, ["--db", url, "audit", "verify"])
    assert result.exit_code == 0, result.output


def check_reports(url: str, name: str) -> None:
    expected = json.loads((FIXTURES / f"{FILES[name]}.report.json").read_text())
    for case in expected["reports"]:
        assert report(url, case["args"], expected["now"]) == case["report"], case["args"]


def check_histories(url: str, name: str) -> None:
    """`history ID --json` keeps SPEC §4: every key the audit-table code
    printed, with the same value (new keys may be added); a migrate entry's
    `values` too ({"from_version": 1}), read from the `migrated` entry's data."""
    expected = json.loads((FIXTURES / f"{FILES[name]}.history.json").read_text())
    for lead_id, old in expected.items():
        result = CliRunner().invoke(main, ["--db", url, "history", lead_id, "--json"])
        assert result.exit_code == 0, result.output
        new = json.loads(result.stdout)
        assert len(new) == len(old), lead_id
        for was, now in zip(old, new, strict=True):
            keys = list(was)
            assert {key: now.get(key) for key in keys} == {key: was[key] for key in keys}, lead_id


def check_leads_kept(before: list[str], after: list[str]) -> None:
    """Every lead row is as it was, with one column more (0006): its due
    time, the back-filled creation time ("due now": the next tick computes
    the real one)."""
    import ast

    assert len(after) == len(before)
    for was, now in zip(before, after, strict=True):
        old_row, new_row = ast.literal_eval(was), ast.literal_eval(now)
        assert new_row[:-1] == old_row
        created_at = old_row[8]  # id, flow, version, stage, fields, cycle, score, entered_at, created_at
        assert new_row[-1] == created_at


def check_writes_continue(url: str) -> None:
    """The engine goes on writing after the converted entries: the next
    global position, each lead's next number and chained hash, and a field
    change whose old value is the one the upgrade recorded."""
    before = journal_rows(url)
    last = {row["lead_id"]: row for row in before}
    with Engine.open(db=url, now="2026-03-01T00:00:00Z", actor="after") as engine:
        engine.record("b", "call", channel="phone")
        engine.set("d", {"budget": 2500})
        assert engine.verify() == []
    added = journal_rows(url)[len(before) :]
    assert [row["seq"] for row in added] == list(range(len(before) + 1, len(before) + 1 + len(added)))
    assert {row["lead_id"] for row in added} == {"b", "d"}
    for lead_id in ("b", "d"):
        mine = [row for row in added if row["lead_id"] == lead_id]
        assert mine[0]["lead_seq"] == last[lead_id]["lead_seq"] + 1
        assert mine[0]["prev_hash"] == last[lead_id]["hash"]
    (change,) = [row for row in added if row["entry"] == "set"]
    assert change["data"]["fields"]["budget"] == [1500, 2500]


# ---------------------------------------------------------------------------
# SQLite: copies of the fixture files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FILES))
def test_a_file_of_the_audit_table_code_upgrades_in_place_losing_nothing(name: str, tmp_path: Path) -> None:
    path = copy_fixture(name, tmp_path)
    old = old_rows(source(name))
    url = sqlite_url(path)
    before = dump(url)
    upgrade(url)
    after = dump(url)
    assert "audit" not in after and {"journal", "journal_seal"} <= set(after)
    for table in ("flows", "events", "waiting", "sla_breaches"):
        assert after[table] == before[table], table
    check_leads_kept(before["leads"], after["leads"])
    check_upgraded(url, old)
    check_reports(url, name)
    check_histories(url, name)
    if name == "rich":
        check_writes_continue(url)


def test_a_0002_file_upgrades_too(tmp_path: Path) -> None:
    path = copy_fixture("rich", tmp_path)
    url = sqlite_url(path)
    run_alembic(url, "0002")
    assert revision(url) == "0002"
    upgrade(url)
    check_upgraded(url, old_rows(source("rich")))
    check_reports(url, "rich")


def test_the_upgrade_reads_no_clock(tmp_path: Path) -> None:
    """The same rows give the same journal, hashes included."""
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir(), second.mkdir()
    urls = [sqlite_url(copy_fixture("rich", folder)) for folder in (first, second)]
    for url in urls:
        upgrade(url)
    assert journal_rows(urls[0]) == journal_rows(urls[1])


def test_a_key_seals_the_upgraded_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = sqlite_url(copy_fixture("rich", tmp_path))
    upgrade(plain)
    keyed_folder = tmp_path / "keyed"
    keyed_folder.mkdir()
    keyed = sqlite_url(copy_fixture("rich", keyed_folder))
    monkeypatch.setenv(KEY_VARIABLE, "a key kept off the database host")
    upgrade(keyed)
    check_upgraded(keyed, old_rows(source("rich")), key=b"a key kept off the database host")
    plain_hashes = {row["hash"] for row in journal_rows(plain)}
    assert plain_hashes.isdisjoint(row["hash"] for row in journal_rows(keyed))


def test_a_fresh_database_is_sealed_by_its_first_write(db_url: str) -> None:
    """Nothing to seal yet: the seal stays unclaimed, so the first writer's
    key (or none) is the journal's, whatever the migration ran with."""
    upgrade(db_url)
    assert scalar(db_url, "SELECT count(*) FROM journal_seal") == 0
    assert scalar(db_url, "SELECT count(*) FROM journal") == 0


# An edit of the old audit table (or of what it must agree with), the lead
# it concerns, and a phrase the refusal must contain.
TAMPERING = [
    ("UPDATE audit SET to_stage = 'won' WHERE lead_id = 'c' AND seq = 4", ["c"], "does not match its hash"),
    ("UPDATE audit SET \"values\" = '{\"budget\":9}' WHERE lead_id = 'a' AND seq = 3", ["a"], "edited"),
    (
        "UPDATE audit SET at = '2026-01-01T00:00:00.000000+00:00' WHERE lead_id = 'g' AND seq = 2",
        ["g"],
        "edited",
    ),
    ("DELETE FROM audit WHERE lead_id = 'd' AND seq = 5", ["d"], 'history ends in "mql"'),
    ("DELETE FROM audit WHERE lead_id = 'd' AND seq = 3", ["d"], "missing or inserted"),
    ("DELETE FROM audit WHERE lead_id = 'f'", ["f"], "no audit entries"),
    ("UPDATE leads SET stage = 'won' WHERE id = 'b'", ["b"], 'stored in "won"'),
    ("UPDATE audit SET at = 'last Tuesday' WHERE lead_id = 'g' AND seq = 2", ["g"], "cannot be read"),
    ("UPDATE audit SET \"values\" = '{\"budget\":' WHERE lead_id = 'c' AND seq = 3", ["c"], "cannot be read"),
    ("UPDATE leads SET fields = '[1, 2]' WHERE id = 'a'", ["a"], "its stored row cannot be read"),
    ("UPDATE events SET at = '2026-13-01' WHERE lead_id = 'b'", ["b"], 'event "web_visit" cannot be read'),
    ("UPDATE sla_breaches SET due_at = 'soon' WHERE lead_id = 'd'", ["d"], "SLA breach"),
    (
        "UPDATE audit SET actor = 'mallory' WHERE (lead_id, seq) IN (('a', 2), ('h', 1))",
        ["a", "h"],
        "2 leads",
    ),
]


def tamper(path: Path, sql: str) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA foreign_keys = OFF")
        con.execute(sql)
        con.commit()
    finally:
        con.close()


@pytest.mark.parametrize(("sql", "named", "phrase"), TAMPERING)
def test_an_edited_0001_history_refuses_to_upgrade(
    sql: str, named: list[str], phrase: str, tmp_path: Path
) -> None:
    path = copy_fixture("rich", tmp_path)
    tamper(path, sql)
    url = sqlite_url(path)
    before = dump(url)
    with pytest.raises(StoreError) as caught:
        upgrade(url)
    message = str(caught.value)
    assert "\n" not in message and message.count(". ") == 0, message
    assert phrase in message and "launder" in message
    for lead_id in "abcdfgh":
        assert (f'lead "{lead_id}"' in message) == (lead_id in named), message
    assert dump(url) == before  # the migration's transaction rolled back: still 0001, audit and all
    assert revision(url) == "0001"

    # The CLI says the same sentence, and nothing else.
    result = CliRunner().invoke(main, ["--db", url, "leads"])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert dump(url) == before


def test_rows_of_a_lead_that_is_gone_refuse_the_upgrade(tmp_path: Path) -> None:
    path = copy_fixture("rich", tmp_path)
    tamper(
        path,
        "INSERT INTO events (lead_id, name, at, count, cycle) VALUES ('zz', 'call', '2026-01-01T00:00:00.000000+00:00', 1, 1)",
    )
    url = sqlite_url(path)
    before = dump(url)
    with pytest.raises(StoreError, match='lead "zz": has events but the lead does not exist'):
        upgrade(url)
    assert dump(url) == before


# ---------------------------------------------------------------------------
# Many leads: the conversion reads them a chunk at a time
# ---------------------------------------------------------------------------


def old_hash(entry: dict[str, Any]) -> str:
    """The 0001 audit hash, written again from its definition."""
    payload = {
        "lead_id": entry["lead_id"],
        "seq": entry["seq"],
        "from": entry["from_stage"],
        "to": entry["to_stage"],
        "kind": entry["kind"],
        "actor": entry["actor"],
        "reason": entry["reason"],
        "at": utc(entry["at"]).isoformat(),
        "flow": entry["flow"],
        "version": entry["version"],
        "cycle": entry["cycle"],
        "values": json.loads(entry["values"]),
        "prev_hash": entry["prev_hash"],
    }
    return hashlib.sha256(
        json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    ).hexdigest()


def widen(path: Path, copies: int, extra_ids: tuple[str, ...] = ()) -> None:
    """Add `copies` copies of every lead of the 0001 file at `path` under new
    ids (and one more per `extra_ids`), each with its history re-chained
    under the 0001 rules."""
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    try:
        leads = [dict(r) for r in con.execute("SELECT * FROM leads ORDER BY id")]
        tables = {
            t: [dict(r) for r in con.execute(f"SELECT * FROM {t}")]
            for t in ("events", "audit", "sla_breaches")
        }
        names = [f"{lead['id']}-{n:04d}" for n in range(copies) for lead in leads]
        names += list(extra_ids)
        for index, new_id in enumerate(names):
            source = leads[index % len(leads)]
            con.execute(
                "INSERT INTO leads VALUES (:id, :flow, :version, :stage, :fields, :cycle, :score, :entered_at, "
                ":created_at, :updated_at, :revision)",
                {**source, "id": new_id},
            )
            for event in (e for e in tables["events"] if e["lead_id"] == source["id"]):
                con.execute(
                    "INSERT INTO events (lead_id, name, at, channel, content, count, cycle) "
                    "VALUES (:lead_id, :name, :at, :channel, :content, :count, :cycle)",
                    {**event, "lead_id": new_id},
                )
            for breach in (b for b in tables["sla_breaches"] if b["lead_id"] == source["id"]):
                con.execute(
                    "INSERT INTO sla_breaches VALUES (:lead_id, :flow, :stage, :cycle, :entered_at, :due_at, "
                    ":detected_at)",
                    {**breach, "lead_id": new_id},
                )
            prev = GENESIS_HASH
            for entry in sorted(
                (a for a in tables["audit"] if a["lead_id"] == source["id"]), key=lambda a: a["seq"]
            ):
                entry = {**entry, "lead_id": new_id, "prev_hash": prev}
                entry["hash"] = prev = old_hash(entry)
                con.execute(
                    "INSERT INTO audit VALUES (:lead_id, :seq, :from_stage, :to_stage, :kind, :actor, :reason, "
                    ":at, :flow, :version, :cycle, :values, :prev_hash, :hash)",
                    entry,
                )
        con.commit()
    finally:
        con.close()


# Ids whose byte order differs from a locale's order: PostgreSQL must page
# through them as SQLite does (collation "C").
ODD_IDS = ("B", "a b", "Ärger", "é", "z", "Z-last", "0")


def test_the_fixture_rechained_by_the_test_is_still_valid_0001(tmp_path: Path) -> None:
    """`old_hash` is the 0001 rule: it gives every stored hash of the fixtures."""
    for name in FILES:
        con = sqlite3.connect(source(name))
        con.row_factory = sqlite3.Row
        for row in con.execute("SELECT * FROM audit"):
            assert old_hash(dict(row)) == row["hash"]
        con.close()


def test_many_leads_upgrade_a_chunk_at_a_time(tmp_path: Path) -> None:
    path = copy_fixture("rich", tmp_path)
    widen(path, 160, ODD_IDS)  # 7 + 7 * 160 + 7 leads: two chunks of 1000 and a bit
    old = old_rows(path)
    assert len(old["leads"]) > 1000
    url = sqlite_url(path)
    upgrade(url)
    check_upgraded(url, old)


# ---------------------------------------------------------------------------
# PostgreSQL: the same rows loaded into a 0001/0002 schema
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "schema"), [("demo", "0001"), ("rich", "0001"), ("rich", "0002"), ("backdated", "0002")]
)
def test_a_postgresql_database_upgrades_in_place(name: str, schema: str, pg_url: str, tmp_path: Path) -> None:
    load_into(pg_url, source(name), schema)
    assert revision(pg_url) == schema
    upgrade(pg_url)
    check_upgraded(pg_url, old_rows(source(name)))
    check_reports(pg_url, name)
    check_histories(pg_url, name)

    # The same journal as SQLite's, hash for hash (no clock, no backend in it).
    url = sqlite_url(copy_fixture(name, tmp_path))
    upgrade(url)
    assert journal_rows(pg_url) == journal_rows(url)

    # New entries continue after the converted ones.
    if name == "rich":
        check_writes_continue(pg_url)
    last = scalar(pg_url, "SELECT max(seq) FROM journal")
    assert scalar(pg_url, "SELECT nextval('journal_seq')") == last + 1


def test_many_leads_upgrade_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    path = copy_fixture("rich", tmp_path)
    widen(path, 160, ODD_IDS)
    load_into(pg_url, path, "0001")
    upgrade(pg_url)
    check_upgraded(pg_url, old_rows(path))
    url = sqlite_url(path)
    upgrade(url)
    assert journal_rows(pg_url) == journal_rows(url)


@pytest.mark.parametrize(("sql", "named", "phrase"), TAMPERING[:1] + TAMPERING[-1:])
def test_an_edited_history_refuses_to_upgrade_on_postgresql(
    sql: str, named: list[str], phrase: str, pg_url: str, tmp_path: Path
) -> None:
    path = copy_fixture("rich", tmp_path)
    tamper(path, sql)
    load_into(pg_url, path, "0001")
    before = dump(pg_url)
    with pytest.raises(StoreError) as caught:
        upgrade(pg_url)
    assert phrase in str(caught.value)
    assert all(f'lead "{lead_id}"' in str(caught.value) for lead_id in named)
    assert dump(pg_url) == before
    assert revision(pg_url) == "0001"


def test_a_refusal_names_the_first_leads_and_counts_the_rest(tmp_path: Path) -> None:
    path = copy_fixture("rich", tmp_path)
    widen(path, 160)
    tamper(path, "UPDATE audit SET actor = 'mallory' WHERE seq = 1")  # every lead's first entry
    url = sqlite_url(path)
    with pytest.raises(StoreError) as caught:
        upgrade(url)
    message = str(caught.value)
    assert message.count('lead "') == 20 and "1127 leads' histories" in message
    assert "and 1107 more leads" in message and 'lead "a":' in message
    assert revision(url) == "0001"
