"""The mixed hot path (issue 10 item 10): what an operation asks of the
database, pinned without timing anything (performance lives in bench/).

A new lead starts on the latest deployed version of its flow.  The engine
no longer asks for that version on a second connection before every lead:
the transaction that writes the lead reads it, on its own connection.  These
tests hold both halves: another process's newer version is still picked up
by an engine that cached an older one, and a run of operations takes no
connection besides the one the store keeps for writing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event

from saleflow import Engine

ROOT = Path(__file__).resolve().parent.parent
MIXED = ROOT / "bench" / "flows" / "mixed.flow"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _newer(tmp_path: Path) -> Path:
    """mixed.flow as version 2, whose first gate also wants a company."""
    source = MIXED.read_text(encoding="utf-8").replace("version 1", "version 2")
    source = source.replace(
        "stage engaged    when e1 >= 1", "stage engaged    when e1 >= 1 and company is set"
    )
    newer = tmp_path / "mixed.flow"
    newer.write_text(source, encoding="utf-8")
    return newer


def test_a_cached_engine_starts_new_leads_on_a_version_deployed_elsewhere(
    db_url: str, tmp_path: Path
) -> None:
    first = Engine.open(MIXED, db=db_url, now=T0, actor="a")
    other = Engine.open(db=db_url, now=T0, actor="b")  # another process
    try:
        first.add_lead("before", email="x@example.com")
        first.add_leads([("batch-1", {"email": "y@example.com"})])
        assert other.deploy(_newer(tmp_path)).version == 2
        # `first` still caches version 1; the lead's own transaction reads 2
        after = first.add_lead("after", email="z@example.com")
        assert after.version == 2
        first.add_leads([("batch-2", {"email": "w@example.com"})])
        assert first.lead("batch-2").version == 2
        assert first.record("after", "e1").stage == "new"  # version 2's gate wants a company
        assert first.record("before", "e1").stage == "engaged"  # version 1's does not
        assert {e.version for e in first.history("after")} == {2}
        assert first.verify() == []
    finally:
        first.close()
        other.close()


def test_operations_take_no_second_connection(db_url: str) -> None:
    engine = Engine.open(MIXED, db=db_url, now=T0, actor="bench")
    checkouts: list[object] = []
    event.listen(engine.store.engine, "checkout", lambda *args: checkouts.append(args))  # type: ignore[attr-defined]
    try:
        engine.add_lead("warm-up", email="w@example.com")
        checkouts.clear()
        for i in range(5):
            engine.add_lead(f"lead-{i}", email=f"{i}@example.com")
            for name in ("e1", "e2", "e3"):
                engine.record(f"lead-{i}", name)
        assert checkouts == []  # every write ran on the store's pinned connection
        assert engine.lead("lead-4").stage == "qualified"
        assert engine.verify() == []
    finally:
        engine.close()
