"""The state machine is load-bearing (issue 10): the move table comes from
it, its conditions are the gates, and a move happens only when firing its
trigger moves the token.  Each test tampers with the machine through
transitions' own API and shows the engine obeying it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from transitions.core import Condition

from saleflow import Engine
from saleflow.compile import CompiledFlow, compile_flow
from saleflow.guards.facts import Facts
from saleflow.language.parse import load_flow

THE_MODEL = Path(__file__).resolve().parent.parent / "flows" / "the_model.flow"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def compiled() -> CompiledFlow:
    return compile_flow(load_flow(THE_MODEL))


def facts(**fields: object) -> Facts:
    return Facts(fields, [], T0, T0, T0)  # type: ignore[arg-type]


def test_the_move_table_is_the_machines() -> None:
    cf = compiled()
    machine = cf._machine
    for stage in cf.flow.stage_names:
        table = {(mv.trigger, mv.target) for mv in cf.moves_from(stage)}
        held = {
            (trigger, transition.dest)
            for trigger in machine.get_triggers(stage)
            for transition in machine.get_transitions(trigger, stage)
        }
        assert table == held, stage
    assert cf.moves_from("awareness"), "the first stage has moves"


def test_a_move_happens_only_when_the_machine_moves() -> None:
    cf = compiled()
    advance = cf.move_to("awareness", "lead")
    assert advance is not None and cf.fire(advance, facts(email="a@x.example"))
    assert not cf.fire(advance, facts())  # the gate (email) is closed
    cf._machine.remove_transition(advance.trigger, "awareness", "lead")
    assert not cf.fire(advance, facts(email="a@x.example"))  # no transition: no move


def test_the_machines_conditions_decide(tmp_path: Path) -> None:
    """A condition added to the machine's transition refuses the move even
    though every gate of the flow holds: the engine asks the machine."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with Engine.open(THE_MODEL, db=url, now=T0) as engine:
        cf = engine.compiled("the_model")
        (transition,) = cf._machine.get_transitions("advance", "awareness", "lead")
        transition.conditions.append(Condition(lambda event: False))
        lead = engine.add_lead("acme", email="cto@acme.example")
        assert lead.stage == "awareness"
        transition.conditions.pop()
        assert engine.set("acme", company="Acme").stage != "awareness"


def test_the_trigger_is_fired_through_the_public_api(tmp_path: Path, monkeypatch: object) -> None:
    from transitions.core import Event

    fired: list[str] = []
    original = Event.trigger

    def counting(self: Event, model: object, *args: object, **kwargs: object) -> bool:
        fired.append(self.name)
        return bool(original(self, model, *args, **kwargs))

    monkeypatch.setattr(Event, "trigger", counting)  # type: ignore[attr-defined]
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with Engine.open(THE_MODEL, db=url, now=T0) as engine:
        engine.add_lead("acme", email="cto@acme.example")
        moves = [e for e in engine.history("acme") if e.entry == "moved"]
    assert moves and len(fired) >= len(moves)
    assert "advance" in fired
