"""One move graph (issue 10): the compiler's machine, the checker's
reachability, the diagrams and the HTML page all read `graph.moves`, so for
any valid flow they agree on which moves exist."""

from __future__ import annotations

from pathlib import Path

from flowgen import valid_flows
from hypothesis import HealthCheck, given, settings

from saleflow.compile import compile_flow
from saleflow.language.parse import load_flow, parse_flow
from saleflow.model import graph
from saleflow.views.diagram import _graph

FLOWS = sorted((Path(__file__).resolve().parent.parent / "flows").glob("*.flow"))


def _agree(source: str) -> None:
    flow = parse_flow(source)
    moves = graph.moves(flow)
    declared = {(mv.kind, mv.source, mv.target) for mv in moves}
    cf = compile_flow(flow)
    machine = {(mv.kind, mv.source, mv.target) for name in flow.stage_names for mv in cf.moves_from(name)}
    assert machine == declared
    drawn = {(edge.kind, edge.source, edge.target) for edge in _graph(flow, exits=False).edges}
    assert drawn == {m for m in declared if m[0] != "exit"}
    successors = graph.successors(flow)
    assert {(s, t) for s, targets in successors.items() for t in targets} == {(m[1], m[2]) for m in declared}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_flows())
def test_every_view_reads_the_same_moves(source: str) -> None:
    _agree(source)


def test_the_shipped_flows() -> None:
    for path in FLOWS:
        _agree(load_flow(path).source)


def test_what_the_model_defines() -> None:
    flow = load_flow(FLOWS[[p.name for p in FLOWS].index("the_model.flow")])
    kinds = {mv.kind for mv in graph.moves(flow)}
    assert kinds == {"advance", "skip", "recycle", "exit"}
    finals = {s.name for s in flow.stages if s.final and s.team is None}
    for mv in graph.moves(flow):
        assert not graph.ends(flow, mv.source)
        if mv.kind == "exit":
            assert mv.target in finals
