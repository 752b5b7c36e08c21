"""A recorded demo history for `saleflow simulate`: leads of
tests/flows/simulate_demo.flow living through `days` days, with the engine
ticked at every midnight (as a daily worker would), and in between, at
random times of day: leads created, fields set, events, requested advances
(some refused), requested recycles, exits, forced moves.  Deterministic for
a seed.  Used by tests/test_simulate.py and the README's worked example."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from saleflow import Engine
from saleflow.errors import Rejected

DEMO_FLOW = Path(__file__).resolve().parent / "flows" / "simulate_demo.flow"
START = datetime(2026, 3, 2, tzinfo=UTC)


def record_history(
    url: str, *, days: int = 40, per_day: int = 3, seed: int = 11, flow: Path = DEMO_FLOW
) -> datetime:
    """Record the history into `url`; returns the end (the midnight after
    the last day, ticked), the `now` to simulate at."""
    rng = random.Random(seed)
    end = START + timedelta(days=days)
    with Engine.open(flow, db=url, now=end, actor="demo") as engine:
        active: list[str] = []
        made = 0
        for day in range(days):
            midnight = START + timedelta(days=day)
            engine.tick(at=midnight)
            times = sorted(rng.uniform(0.3, 0.95) for _ in range(per_day + len(active) // 2))
            for i, fraction in enumerate(times):
                at = midnight + timedelta(days=fraction)
                if i < per_day:
                    made += 1
                    lead_id = f"lead-{made:04d}"
                    fields: dict[str, object] = {"employees": rng.choice([20, 120, 800])}
                    if rng.random() < 0.7:
                        fields["email"] = f"{lead_id}@example.com"
                    engine.add_lead(lead_id, at=at, **fields)
                    active.append(lead_id)
                    continue
                if not active:
                    continue
                lead_id = rng.choice(active)
                _act(engine, rng, lead_id, at)
                lead = engine.store.get_lead(lead_id)
                if lead is not None and lead.stage in ("lost", "closed_won"):
                    active.remove(lead_id)
        engine.tick(at=end)
    return end


def _act(engine: Engine, rng: random.Random, lead_id: str, at: datetime) -> None:
    lead = engine.store.get_lead(lead_id)
    assert lead is not None
    stage = lead.stage
    roll = rng.random()
    try:
        if stage == "awareness":
            engine.set(lead_id, at=at, email=f"{lead_id}@example.com")
        elif stage in ("lead", "mql") and roll < 0.7:
            engine.record(lead_id, "web_visit", at=at, count=rng.choice([1, 1, 2]))
        elif stage == "mql" or (stage == "lead" and roll < 0.8):
            engine.set(lead_id, at=at, owner=rng.choice(["ana", "bo"]))
        elif stage == "contacting" and roll < 0.15:
            engine.set(lead_id, at=at, lost_reason="timing")
            engine.advance(lead_id, to="lead", at=at, reason="not now")
        elif stage == "contacting" and roll < 0.55:
            engine.set(lead_id, at=at, need=True)
        elif stage == "contacting":
            engine.record(lead_id, "call_connected", at=at)
        elif stage == "sql" and roll < 0.1:
            engine.advance(lead_id, to="contacting", force=True, at=at, reason="wrong owner")
        elif stage == "sql":
            engine.record(lead_id, "meeting_held", at=at)
        elif stage == "opportunity" and roll < 0.45:
            pass  # Field Sales is busy: some opportunities go stale and recycle on their own
        elif stage == "opportunity" and roll < 0.6:
            engine.record(lead_id, "web_visit", at=at)
        elif stage == "opportunity" and roll < 0.9:
            engine.advance(lead_id, to="proposal", at=at, reason="proposal sent")
        elif stage == "opportunity":
            engine.record(lead_id, "meeting_held", at=at)
        elif stage == "proposal" and roll < 0.2:
            engine.set(lead_id, at=at, lost_reason="competitor")
            engine.advance(lead_id, to="lost", at=at, reason="went elsewhere")
        elif stage == "proposal":
            engine.record(lead_id, "contract_signed", at=at)
        elif stage == "lead":
            engine.set(lead_id, at=at, employees=800)
    except Rejected:
        pass  # refused requests are not in the journal
