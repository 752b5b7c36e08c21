"""The store against real databases: SQLite files and a PostgreSQL server.

No mocks: every test opens a real database through `open_store`, the way the
engine and the CLI do.  `db_url` runs a test on both backends.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine

import saleflow.store.connect as connect
from saleflow.errors import BadInput, Conflict, NotFound, StoreError
from saleflow.journal import GENESIS_HASH, JournalEntry
from saleflow.records import EventRecord, Lead, SlaBreach
from saleflow.store import KNOWN_REVISIONS, SCHEMA_HEAD, SqlStore, open_store
from saleflow.store.schema import metadata

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
TABLES = {"flows", "leads", "events", "journal", "journal_seal", "waiting", "sla_breaches"}


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def make_lead(lead_id: str, flow: str = "f", stage: str = "lead", at: datetime = T0, **fields: Any) -> Lead:
    return Lead(lead_id, flow, 1, stage, dict(fields), 1, at, at, at)


def entry(
    lead_id: str,
    source: str | None,
    to: str,
    *,
    at: datetime = T0,
    values: dict[str, Any] | None = None,
) -> JournalEntry:
    """An unsealed entry: a lead's creation (no `source`) or a move."""
    return JournalEntry(
        seq=0,
        lead_id=lead_id,
        lead_seq=0,
        entry="created" if source is None else "moved",
        kind="create" if source is None else "advance",
        from_stage=source,
        stage=to,
        cycle=1,
        at=at,
        recorded_at=at,
        actor="tester",
        reason=None,
        flow="f",
        version=1,
        data={"fields": {}} if source is None else {"values": values or {}},
    )


def add_leads(store: SqlStore, *leads: Lead) -> None:
    with store.transaction() as tx:
        for lead in leads:
            tx.insert_lead(lead)
            tx.append(entry(lead.id, None, lead.stage, at=lead.created_at))


def raw_engine(url: str) -> Engine:
    """A plain SQLAlchemy engine, to look at or tamper with the database from outside."""
    return create_engine(url)


def table_names(url: str) -> set[str]:
    engine = raw_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def one_sentence(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and message.strip() == message


@pytest.fixture
def store(db_url: str) -> Iterator[SqlStore]:
    opened = open_store(db_url)
    try:
        yield opened
    finally:
        opened.close()


# ---------------------------------------------------------------------------
# schema and migrations
# ---------------------------------------------------------------------------


def test_schema_is_created_on_first_use(db_url: str) -> None:
    assert not TABLES & table_names(db_url)
    open_store(db_url).close()
    assert TABLES | {"alembic_version"} <= table_names(db_url)
    engine = raw_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [SCHEMA_HEAD]
    engine.dispose()


def test_migrations_are_not_rerun(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(db_url).close()

    def refuse(*args: object) -> None:
        raise AssertionError("migrations ran again")

    monkeypatch.setattr(connect, "_migrate", refuse)
    reopened = open_store(db_url)
    assert reopened.get_lead("nobody") is None
    reopened.close()


def test_schema_check_is_one_query(db_url: str) -> None:
    open_store(db_url).close()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        started = time.perf_counter()
        open_store(db_url).close()
        elapsed = time.perf_counter() - started
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    ours = [s for s in statements if "alembic" in s or "CREATE" in s.upper()]
    assert ours == ["SELECT version_num FROM alembic_version"]
    assert elapsed < 1.0  # typically a few milliseconds


def test_opening_a_current_store_does_not_import_alembic(sqlite_url: str) -> None:
    open_store(sqlite_url).close()
    code = (
        "import sys, time\n"
        "from saleflow.store import open_store\n"
        "t = time.perf_counter()\n"
        f"open_store({sqlite_url!r}).close()\n"
        "print(round((time.perf_counter() - t) * 1000, 1), 'alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    ms, imported = out.split()
    assert imported == "False"
    assert float(ms) < 500


def test_known_revisions_match_the_shipped_migrations() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "saleflow:migrations")
    scripts = ScriptDirectory.from_config(config)
    assert set(scripts.get_heads()) == {SCHEMA_HEAD}
    assert {script.revision for script in scripts.walk_revisions()} == set(KNOWN_REVISIONS)


def test_migrated_schema_matches_the_metadata(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    open_store(db_url).close()
    engine = raw_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_newer_schema_is_refused(db_url: str) -> None:
    open_store(db_url).close()
    engine = raw_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this saleflow") as caught:
        open_store(db_url)
    assert one_sentence(str(caught.value))
    assert "9999" in str(caught.value)


def test_failed_migration_leaves_no_half_created_schema(db_url: str) -> None:
    engine = raw_engine(db_url)
    with engine.begin() as conn:  # a foreign table in the way of the migration
        conn.execute(text("CREATE TABLE audit (something INTEGER)"))
    with pytest.raises(StoreError, match="cannot create the saleflow tables") as caught:
        open_store(db_url)
    assert one_sentence(str(caught.value))
    assert table_names(db_url) == {"audit"}
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit"))
    engine.dispose()
    open_store(db_url).close()
    assert table_names(db_url) >= TABLES


def _open_and_count(url: str) -> int:
    store = open_store(url, lock_timeout=30)
    try:
        return store.count_leads()
    finally:
        store.close()


def test_concurrent_first_use_migrates_once(db_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        assert pool.map(_open_and_count, [db_url] * 3) == [0, 0, 0]
    assert table_names(db_url) >= TABLES


# ---------------------------------------------------------------------------
# unusable databases
# ---------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def _make_read_only(path: Path) -> None:
    os.chmod(path, 0o444)
    if not os.access(path, os.W_OK):
        return
    # root ignores permissions; an immutable file stops even root
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        os.chmod(path, 0o644)
        pytest.skip("cannot make a file read-only for this user")


def _make_writable(path: Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o644)


def test_read_only_file_is_refused_and_left_unchanged(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    add_leads(store, make_lead("a"))
    store.close()
    path = tmp_path / "saleflow.db"
    before = _snapshot(tmp_path)
    _make_read_only(path)
    try:
        with pytest.raises(StoreError, match="read-only") as caught:
            open_store(sqlite_url)
        assert one_sentence(str(caught.value))
        assert _snapshot(tmp_path) == before
    finally:
        _make_writable(path)
    assert open_store(sqlite_url).get_lead("a") is not None


def test_read_only_uri_reads_but_refuses_writes(sqlite_url: str, tmp_path: Path) -> None:
    store = open_store(sqlite_url)
    add_leads(store, make_lead("a"))
    store.close()
    reader = open_store(f"sqlite:///file:{tmp_path / 'saleflow.db'}?mode=ro&uri=true")
    try:
        assert reader.get_lead("a") is not None
        with pytest.raises(StoreError, match="read-only"), reader.transaction() as tx:
            tx.insert_lead(make_lead("b"))
    finally:
        reader.close()


def test_unusable_sqlite_paths(tmp_path: Path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    junk = tmp_path / "notes.txt"
    junk.write_bytes(b"these are not the bytes of a database\n" * 200)
    before = junk.read_bytes()
    cases = {
        f"sqlite:///{folder}": "is a folder",
        f"sqlite:///{tmp_path / 'missing' / 'x.db'}": "does not exist",
        f"sqlite:///{junk}": "not a SQLite database",
    }
    for url, fragment in cases.items():
        with pytest.raises(StoreError, match=fragment) as caught:
            open_store(url)
        assert one_sentence(str(caught.value)), str(caught.value)
    assert junk.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "notes.txt"]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("just some words", "not a database URL"),
        ("mysql://root@localhost/db", "SQLite or PostgreSQL"),
        ("postgresql+asyncpg://u@localhost/db", "unsupported PostgreSQL driver"),
        ("sqlite+aiosqlite:///x.db", "unsupported SQLite driver"),
        # issue 8: every malformed shape is one sentence, not SQLAlchemy's five lines
        ("sqlite://host:99/x.db", "names a host"),
        ("sqlite://host/x.db", "names a host"),
        ("sqlite://user:pw@/x.db", "names a host"),
        ("sqlite:///:memory:?timeout=soon", "cannot use the database in memory"),
        ("sqlite:///:memory:?check_same_thread=maybe", "cannot use the database in memory"),
        ("postgresql://u@h:port/d", "not a database URL"),
        ("postgresql://u@[::1/d", "not a database URL"),
        ("sqlite:///x\x00.db", "NUL byte"),
        ("sqlite:///x\udcff.db", "not valid Unicode"),
        ("", "not a database URL"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(StoreError, match=fragment) as caught:
        open_store(url)
    assert one_sentence(str(caught.value))


def test_unreachable_server() -> None:
    started = time.perf_counter()
    with pytest.raises(StoreError, match="cannot connect to the database") as caught:
        open_store("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    assert time.perf_counter() - started < 10
    assert one_sentence(str(caught.value))
    assert "127.0.0.1:1" in str(caught.value)


def test_missing_postgresql_database(pg_server: str) -> None:
    from sqlalchemy.engine import make_url

    url = make_url(pg_server).set(database="saleflow_no_such_database").render_as_string(hide_password=False)
    with pytest.raises(StoreError, match="saleflow_no_such_database") as caught:
        open_store(url)
    assert one_sentence(str(caught.value))


def test_plain_postgresql_scheme_means_psycopg(pg_url: str) -> None:
    open_store(pg_url.replace("postgresql+psycopg://", "postgresql://", 1)).close()


# ---------------------------------------------------------------------------
# flows
# ---------------------------------------------------------------------------


def test_deploy_is_idempotent_by_content_and_never_renumbers(store: SqlStore) -> None:
    assert store.deploy_flow("m", 1, "h1", "src1", "flows/m.flow") == (1, True)
    assert store.deploy_flow("m", 1, "h1", "src1", "flows/m.flow") == (1, False)
    with pytest.raises(
        BadInput, match=r"version 1 is already deployed with other content; raise its version to 2"
    ) as caught:
        store.deploy_flow("m", 1, "h2", "src2", "flows/m.flow")
    assert one_sentence(str(caught.value))
    assert store.deploy_flow("m", 5, "h3", "src3", "flows/m.flow") == (
        5,
        True,
    )  # the declared version, gaps allowed
    with pytest.raises(
        BadInput, match=r"version 3 is below the latest deployed version 5; raise its version to 6"
    ):
        store.deploy_flow("m", 3, "h4", "src4", "flows/m.flow")
    assert store.deploy_flow("m", 9, "h3", "src3", "flows/m.flow") == (5, False)  # known content
    assert store.deploy_flow("other", 3, "h1", "x", "o.flow") == (3, True)  # versions are per flow
    assert store.flow_source("m") == (5, "src3", "flows/m.flow")
    assert store.flow_names() == ["m", "other"]


def test_deploy_recognises_rows_stored_with_a_raw_text_hash(store: SqlStore) -> None:
    """Databases written before identities hold a hash of the source text;
    `identity_of` judges those rows by what their source means."""
    store.deploy_flow("m", 1, "0" * 64, "old text", "m.flow")
    same = {"old text": "m1:abc"}.get
    assert store.deploy_flow("m", 1, "m1:abc", "new text", "m.flow", identity_of=same) == (1, False)
    with pytest.raises(BadInput, match="raise its version to 2"):
        store.deploy_flow("m", 1, "m1:other", "changed", "m.flow", identity_of=same)
    assert store.deploy_flow("m", 2, "m1:other", "changed", "m.flow", identity_of=same) == (2, True)


def test_flow_source_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFound, match='flow "ghost" is not deployed'):
        store.flow_source("ghost")
    store.deploy_flow("m", 1, "h1", "src", "m.flow")
    with pytest.raises(NotFound, match=r'flow "m" has no version 7 \(deployed versions: 1\)') as caught:
        store.flow_source("m", 7)
    assert one_sentence(str(caught.value))


# ---------------------------------------------------------------------------
# leads
# ---------------------------------------------------------------------------


def test_lead_round_trip(store: SqlStore) -> None:
    tokyo = timezone(timedelta(hours=9))
    at = datetime(2024, 5, 1, 18, 30, 15, 123456, tzinfo=tokyo)
    lead = Lead(
        "acme-1",
        "f",
        2,
        "lead",
        {"company": "Acmé", "employees": 800, "budget": 12500.5, "need": True, "owner": None},
        3,
        at,
        at - timedelta(days=3),
        at,
        score=42.5,
    )
    with store.transaction() as tx:
        assert tx.lock_lead("acme-1") is None
        tx.insert_lead(lead)
    stored = store.get_lead("acme-1")
    assert stored == lead  # datetimes compare by instant
    assert stored is not None
    assert stored.entered_at.tzinfo is UTC
    assert stored.entered_at == datetime(2024, 5, 1, 9, 30, 15, 123456, tzinfo=UTC)
    assert type(stored.fields["employees"]) is int
    assert type(stored.fields["need"]) is bool
    assert store.get_lead("nobody") is None


def test_naive_times_are_taken_as_utc(store: SqlStore) -> None:
    naive = datetime(2024, 5, 1, 9, 0)
    add_leads(store, make_lead("a", at=naive))
    stored = store.get_lead("a")
    assert stored is not None
    assert stored.created_at == naive.replace(tzinfo=UTC)


def test_update_checks_the_revision(store: SqlStore) -> None:
    add_leads(store, make_lead("a", counter=0))
    with store.transaction() as tx:
        lead = tx.lock_lead("a")
        assert lead is not None and lead.revision == 0
        lead.fields["counter"] = 1
        lead.stage = "mql"
        updated = tx.update_lead(lead)
        assert updated.revision == 1 and lead.revision == 0
    stale = lead
    with pytest.raises(Conflict, match='lead "a" was changed by another process'), store.transaction() as tx:
        tx.update_lead(stale)
    stored = store.get_lead("a")
    assert stored is not None
    assert (stored.stage, stored.fields, stored.revision) == ("mql", {"counter": 1}, 1)


def test_duplicate_lead_is_a_conflict(store: SqlStore) -> None:
    add_leads(store, make_lead("a"))
    with pytest.raises(Conflict, match='lead "a" was created at the same time'), store.transaction() as tx:
        tx.insert_lead(make_lead("a"))
    assert store.count_leads() == 1


def test_error_in_block_rolls_back(store: SqlStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.insert_lead(make_lead("a"))
        raise RuntimeError("engine failure")
    assert store.get_lead("a") is None
    add_leads(store, make_lead("a"))  # the store is still usable
    assert store.get_lead("a") is not None


def test_held_lock_times_out_as_conflict(db_url: str) -> None:
    store = open_store(db_url, lock_timeout=0.3)
    try:
        add_leads(store, make_lead("a"))
        with store.transaction() as holder:
            assert holder.lock_lead("a") is not None
            started = time.perf_counter()
            with pytest.raises(Conflict) as caught, store.transaction() as other:
                other.lock_lead("a")
            assert 0.2 < time.perf_counter() - started < 5
            assert one_sentence(str(caught.value))
        with store.transaction() as tx:  # released with the holder's commit
            assert tx.lock_lead("a") is not None
    finally:
        store.close()


def test_stage_lock_serialises_capacity_decisions(pg_url: str) -> None:
    store = open_store(pg_url, lock_timeout=0.3)
    try:
        with store.transaction() as holder:
            holder.lock_stage("f", "opportunity")
            with store.transaction() as other:
                other.lock_stage("f", "proposal")  # another stage: free
                other.lock_stage("g", "opportunity")  # another flow: free
            with pytest.raises(Conflict, match='stage "opportunity"'), store.transaction() as other:
                other.lock_stage("f", "opportunity")
        with store.transaction() as tx:
            tx.lock_stage("f", "opportunity")
    finally:
        store.close()


def _drop_other_connections(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(
        pg_url.replace("postgresql+psycopg://", "postgresql://", 1), autocommit=True
    ) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_dropped_connection_is_replaced(pg_url: str) -> None:
    """A pooled connection the server dropped (restart, idle timeout): a read
    reconnects by itself; a write fails as a retryable `Conflict`, since
    nothing was committed, and the retry gets a fresh connection."""
    store = open_store(pg_url)
    try:
        add_leads(store, make_lead("a"))
        _drop_other_connections(pg_url)
        assert store.get_lead("a") is not None
        _drop_other_connections(pg_url)
        with (
            pytest.raises(Conflict, match=r"connection to the database .* was lost"),
            store.transaction() as tx,
        ):
            tx.lock_lead("a")
        with store.transaction() as tx:
            assert tx.lock_lead("a") is not None
    finally:
        store.close()


def test_stage_lock_is_a_no_op_on_sqlite(sqlite_url: str) -> None:
    with open_store(sqlite_url) as store, store.transaction() as tx:
        tx.lock_stage("f", "opportunity")
        tx.lock_stage("f", "opportunity")


def test_counts(store: SqlStore) -> None:
    add_leads(
        store,
        make_lead("a", stage="lead"),
        make_lead("b", stage="mql"),
        make_lead("c", stage="mql"),
        make_lead("d", flow="g", stage="mql"),
    )
    assert store.count_leads() == 4
    assert store.count_leads("f") == 3
    assert store.count_leads("f", "mql") == 2
    with store.transaction() as tx:
        assert tx.count_in_stage("f", "mql") == 2
        assert tx.count_in_stage("g", "mql") == 1
        assert tx.count_in_stage("f", "sql") == 0


def test_iter_leads_pages_by_key(store: SqlStore) -> None:
    ids = [f"L{i:03d}" for i in range(25)]
    random.Random(1).shuffle(ids)
    add_leads(store, *(make_lead(i, stage="mql" if int(i[1:]) % 2 else "lead") for i in ids))
    add_leads(store, make_lead("X1", flow="g"))
    pages = list(store.iter_leads(flow="f", chunk=10))
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [lead.id for page in pages for lead in page] == sorted(ids)
    odd = [lead.id for page in store.iter_leads(flow="f", stages=["mql"], chunk=4) for lead in page]
    assert odd == sorted(i for i in ids if int(i[1:]) % 2)
    assert [len(p) for p in store.iter_leads(chunk=13)] == [13, 13]
    assert list(store.iter_leads(stages=[])) == []
    assert list(store.iter_leads(flow="nope")) == []


def test_iter_leads_allows_writes_between_chunks(store: SqlStore) -> None:
    add_leads(store, *(make_lead(f"L{i:02d}", counter=0) for i in range(12)))
    seen = 0
    for page in store.iter_leads(chunk=5):
        for lead in page:
            with store.transaction() as tx:
                fresh = tx.lock_lead(lead.id)
                assert fresh is not None
                fresh.fields["counter"] = 1
                tx.update_lead(fresh)
            seen += 1
    assert seen == 12
    assert all(lead.fields["counter"] == 1 for page in store.iter_leads() for lead in page)


def test_id_order_is_byte_order_on_every_backend(store: SqlStore) -> None:
    ids = ["b", "B", "a", "_x", "A1", "a-2", "a.1", "Z", "é"]
    add_leads(store, *(make_lead(i) for i in ids))
    got = [lead.id for page in store.iter_leads(chunk=2) for lead in page]
    assert got == sorted(ids, key=lambda s: s.encode("utf-8"))


# ---------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------


def test_events_per_cycle(store: SqlStore) -> None:
    add_leads(store, make_lead("a"), make_lead("b"))
    with store.transaction() as tx:
        tx.insert_event("a", EventRecord("web_visit", T0 + timedelta(days=2), "web", cycle=1))
        tx.insert_event(
            "a", EventRecord("seminar_attended", T0 + timedelta(days=1), "seminar", "Q2 seminar", 1, 1)
        )
        tx.insert_event("a", EventRecord("web_visit", T0 + timedelta(days=9), "web", count=3, cycle=2))
        tx.insert_event("b", EventRecord("web_visit", T0, cycle=1))
    with store.transaction() as tx:
        first = tx.events("a", 1)
        assert [(e.name, e.at) for e in first] == [
            ("seminar_attended", T0 + timedelta(days=1)),
            ("web_visit", T0 + timedelta(days=2)),
        ]
        assert first[0] == EventRecord(
            "seminar_attended", T0 + timedelta(days=1), "seminar", "Q2 seminar", 1, 1
        )
        assert tx.events("a", 2) == [EventRecord("web_visit", T0 + timedelta(days=9), "web", None, 3, 2)]
        assert tx.events("a", 3) == []
    assert [e.cycle for e in store.events_of("a")] == [1, 1, 2]
    assert len(store.events_of("b")) == 1


def test_event_for_missing_lead_is_refused(store: SqlStore) -> None:
    with pytest.raises(StoreError) as caught, store.transaction() as tx:
        tx.insert_event("ghost", EventRecord("web_visit", T0))
    assert one_sentence(str(caught.value))


# ---------------------------------------------------------------------------
# audit
# ---------------------------------------------------------------------------


def test_journal_append_history_and_chain(store: SqlStore) -> None:
    add_leads(store, make_lead("a"), make_lead("b"))
    values = {"score": 65.5, "budget": None, "note": "café", "nested": {"x": [1, 2.5, True]}}
    with store.transaction() as tx:
        tx.append(entry("a", "lead", "mql", at=T0 + timedelta(hours=1), values=values))
        tx.append(entry("b", "lead", "mql", at=T0 + timedelta(hours=1)))
        tx.append(entry("a", "mql", "sql", at=T0 + timedelta(hours=2)))
    history = store.journal("a")
    assert [(e.lead_seq, e.from_stage, e.to_stage) for e in history] == [
        (1, None, "lead"),
        (2, "lead", "mql"),
        (3, "mql", "sql"),
    ]
    # global positions in the order entries were appended, across leads
    assert [e.seq for e in history] == [1, 3, 5]
    assert [e.seq for e in store.journal("b")] == [2, 4]
    assert history[1].values == values
    previous = GENESIS_HASH
    for item in history:  # the chain survives the round trip
        assert item.prev_hash == previous
        assert item.compute_hash() == item.hash
        previous = item.hash
    assert store.journal("nobody") == []


def test_an_entry_is_sealed_at_the_commit_and_not_written_on_a_rollback(store: SqlStore) -> None:
    add_leads(store, make_lead("a"))
    appended = entry("a", "lead", "mql")
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.append(appended)
        raise RuntimeError("the operation failed")
    assert appended.hash == ""  # never sealed
    assert [e.lead_seq for e in store.journal("a")] == [1]
    with store.transaction() as tx:
        tx.append(entry("a", "lead", "mql"))
    assert [(e.lead_seq, e.seq) for e in store.journal("a")] == [(1, 1), (2, 2)]


def test_a_keyed_store_seals_with_hmac(db_url: str) -> None:
    with open_store(db_url, key=b"secret") as store:
        assert store.key == b"secret"
        add_leads(store, make_lead("a"))
        (first,) = store.journal("a")
        assert first.hash == first.compute_hash(b"secret") != first.compute_hash(None)


def test_iter_journal_orders_by_lead_and_lead_seq(store: SqlStore) -> None:
    leads = ["c", "a", "b"]
    add_leads(store, *(make_lead(i) for i in leads))
    with store.transaction() as tx:
        for lead_id in leads:
            for n in range(3):
                tx.append(entry(lead_id, f"s{n - 1}", f"s{n}", at=T0 + timedelta(minutes=n)))
    pages = list(store.iter_journal(chunk=5))
    assert [len(p) for p in pages] == [5, 5, 2]
    keys = [(e.lead_id, e.lead_seq) for page in pages for e in page]
    assert keys == [(lead, seq) for lead in ("a", "b", "c") for seq in (1, 2, 3, 4)]
    assert [len(p) for p in store.iter_journal(chunk=12)] == [12]
    with pytest.raises(ValueError):
        next(store.iter_journal(chunk=0))


def test_journal_is_indexed_for_reports(store: SqlStore) -> None:
    indexes = inspect(store.engine).get_indexes("journal")
    assert ["flow", "stage", "at"] in [index["column_names"] for index in indexes]
    unique = inspect(store.engine).get_unique_constraints("journal")
    assert ["lead_id", "lead_seq"] in [u["column_names"] for u in unique]


def test_read_context_for_report_queries(store: SqlStore) -> None:
    add_leads(store, make_lead("a", stage="mql"), make_lead("b", stage="mql"))
    with store.read() as conn:
        rows = conn.execute(text("SELECT stage, count(*) FROM journal GROUP BY stage")).all()
    assert [tuple(row) for row in rows] == [("mql", 2)]


# ---------------------------------------------------------------------------
# capacity queue and SLA breaches
# ---------------------------------------------------------------------------


def test_waiting_queue_is_ordered_by_score(store: SqlStore) -> None:
    add_leads(store, *(make_lead(i) for i in "abcdefg"))
    with store.transaction() as tx:
        tx.add_waiting("a", "f", "opportunity", 10, T0 + timedelta(hours=1))
        tx.add_waiting("b", "f", "opportunity", 30, T0 + timedelta(hours=2))
        tx.add_waiting("c", "f", "opportunity", 30, T0)
        tx.add_waiting("d", "f", "opportunity", 20, T0 + timedelta(hours=3))
        tx.add_waiting("e", "f", "proposal", 99, T0)
        tx.add_waiting("g", "g", "opportunity", 99, T0)
    with store.transaction() as tx:
        assert tx.waiting("f", "opportunity", 10) == ["c", "b", "d", "a"]
        assert tx.waiting("f", "opportunity", 2) == ["c", "b"]
        tx.remove_waiting("c")
        tx.remove_waiting("nobody")
        # Waiting again for the same stage keeps the place in time, takes the new score.
        tx.add_waiting("f", "f", "opportunity", 30, T0 + timedelta(hours=5))
        tx.add_waiting("b", "f", "opportunity", 30, T0 + timedelta(hours=9))
        tx.add_waiting("a", "f", "opportunity", 25, T0 + timedelta(hours=9))
        assert tx.waiting("f", "opportunity", 10) == ["b", "f", "a", "d"]
        # Waiting for another stage starts afresh there.
        tx.add_waiting("b", "f", "proposal", 99, T0 + timedelta(hours=9))
        assert tx.waiting("f", "proposal", 10) == ["e", "b"]
        assert tx.waiting("f", "opportunity", 10) == ["f", "a", "d"]


def test_breaches_are_recorded_once(store: SqlStore) -> None:
    add_leads(store, make_lead("a"))
    breach = SlaBreach("a", "f", "contacting", 1, T0, T0 + timedelta(days=2), T0 + timedelta(days=3))
    with store.transaction() as tx:
        assert tx.record_breach(breach) is True
        assert tx.record_breach(breach) is False
    later = SlaBreach("a", "f", "contacting", 1, T0, T0 + timedelta(days=2), T0 + timedelta(days=4))
    with store.transaction() as tx:
        assert tx.record_breach(later) is False  # same lead, stage, cycle and entry
        assert tx.record_breach(SlaBreach("a", "f", "contacting", 2, T0, T0, T0)) is True
        reentered = T0 + timedelta(days=10)
        assert tx.record_breach(SlaBreach("a", "f", "contacting", 1, reentered, reentered, reentered)) is True
    with store.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM sla_breaches")).scalar_one() == 3


# ---------------------------------------------------------------------------
# several processes at once
# ---------------------------------------------------------------------------


def _hammer(url: str, worker: int, ops: int, lead_ids: list[str]) -> tuple[dict[str, int], int]:
    """`ops` read-modify-write operations on a few shared leads; returns how
    many were acknowledged (committed) per lead, and how many conflicts were
    retried on the way."""
    store = open_store(url, lock_timeout=30)
    rng = random.Random(worker)
    acknowledged: Counter[str] = Counter()
    conflicts = 0
    try:
        for n in range(ops):
            lead_id = rng.choice(lead_ids)
            optimistic = n % 2 == 1  # read before the transaction: only the revision check can catch a race
            for _attempt in range(500):
                try:
                    seen = store.get_lead(lead_id) if optimistic else None
                    with store.transaction() as tx:
                        lead = seen or tx.lock_lead(lead_id)
                        assert lead is not None
                        lead.fields["counter"] = int(lead.fields["counter"] or 0) + 1  # type: ignore[arg-type]
                        lead.updated_at = datetime.now(UTC)
                        tx.update_lead(lead)
                        tx.append(entry(lead_id, "lead", f"w{worker}", values={"n": n}))
                except Conflict:
                    conflicts += 1
                    time.sleep(rng.random() * 0.005)
                    continue
                acknowledged[lead_id] += 1
                break
    finally:
        store.close()
    return dict(acknowledged), conflicts


def test_many_processes_never_lose_an_update(db_url: str) -> None:
    lead_ids = ["hot-1", "hot-2", "hot-3"]
    store = open_store(db_url)
    add_leads(store, *(make_lead(i, counter=0) for i in lead_ids))
    workers, ops = 4, 30
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        results = pool.starmap(_hammer, [(db_url, w, ops, lead_ids) for w in range(workers)])
    total: Counter[str] = Counter()
    for acknowledged, _conflicts in results:
        total.update(acknowledged)
    print(f"retried conflicts: {sum(c for _, c in results)}")
    assert sum(total.values()) == workers * ops  # every operation got through, after retries
    for lead_id in lead_ids:
        lead = store.get_lead(lead_id)
        assert lead is not None
        assert lead.fields["counter"] == total[lead_id]
        assert lead.revision == total[lead_id]
        history = store.journal(lead_id)
        assert [e.lead_seq for e in history] == list(range(1, total[lead_id] + 2))  # no gaps, no repeats
        assert [e.seq for e in history] == sorted({e.seq for e in history})
        previous = GENESIS_HASH
        for item in history:
            assert item.prev_hash == previous and item.compute_hash() == item.hash
            previous = item.hash
    store.close()


# ---------------------------------------------------------------------------
# rows edited behind saleflow's back (issue 8)
# ---------------------------------------------------------------------------

CORRUPTIONS = {
    "fields not an object": ("UPDATE leads SET fields = :v WHERE id = 'b'", "[1, 2]", "fields"),
    "a field holding an object": ("UPDATE leads SET fields = :v WHERE id = 'b'", '{"x": {"y": 1}}', "fields"),
    "a time past the range": (
        "UPDATE leads SET entered_at = :v WHERE id = 'b'",
        datetime(9999, 12, 31, tzinfo=UTC),
        "a time",
    ),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corrupted_row_is_named(db_url: str, name: str) -> None:
    """Every read of a corrupted row is one `StoreError` sentence that says
    the database is corrupted and names the lead: one lead, a page of
    leads, a transaction's lock."""
    sql, value, what = CORRUPTIONS[name]
    with open_store(db_url) as store:
        add_leads(store, make_lead("a"), make_lead("b"), make_lead("c"))
    if "fields" in sql and db_url.startswith("postgresql"):
        sql = sql.replace(":v", "CAST(:v AS jsonb)")
    engine = raw_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(sql), {"v": value})
    engine.dispose()
    with open_store(db_url) as store:
        for read in (
            lambda: store.get_lead("b"),
            lambda: [lead for page in store.iter_leads(chunk=2) for lead in page],
            lambda: _locked(store, "b"),
        ):
            with pytest.raises(StoreError) as caught:
                read()
            message = str(caught.value)
            assert message.startswith('the database is corrupted: lead "b" has ' + what), message
            assert one_sentence(message)
        assert store.get_lead("a") is not None  # the others still read


def _locked(store: SqlStore, lead_id: str) -> Any:
    with store.transaction() as tx:
        return tx.lock_lead(lead_id)


def test_an_unloadable_timestamp_is_named(pg_url: str) -> None:
    """PostgreSQL holds 'infinity', which no Python datetime is."""
    with open_store(pg_url) as store:
        add_leads(store, make_lead("a"), make_lead("inf"))
    engine = raw_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE leads SET entered_at = 'infinity' WHERE id = 'inf'"))
    engine.dispose()
    with open_store(pg_url) as store:
        for read in (lambda: store.get_lead("inf"), lambda: list(store.iter_leads())):
            with pytest.raises(StoreError, match='the database is corrupted: lead "inf"') as caught:
                read()
            assert one_sentence(str(caught.value))


def test_a_relative_sqlite_path_stays_the_file_it_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative SQLite URL is the file in the directory the store was
    opened in: a connection opened after the process changes directory
    (the pool opens the file again) is the same database, and no empty one
    appears where the process went."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(here)
    store = open_store("sqlite:///leads.db")
    try:
        store.deploy_flow("f", 1, "hash", "flow f version 1", "f.flow")
        monkeypatch.chdir(elsewhere)
        store.engine.dispose()  # every later read opens a new connection
        assert store.flow_names() == ["f"]
        assert store.shared_url == f"sqlite:///{here / 'leads.db'}"
    finally:
        store.close()
    assert list(elsewhere.iterdir()) == []
