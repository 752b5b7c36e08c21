"""A flow as a picture: Mermaid and Graphviz DOT text.

Layer 5, a read-only view.  Both formats draw the same thing from one
description of the graph (`_Graph`): teams as boxes titled with the team's
title, the main line as solid edges labelled with the target stage's gate,
skips dashed, recycles dotted in red and pointing back, exits to final side
stages faint (only when asked for).  Node labels say what a stage is (initial,
final, manual), its SLA and capacity and, when `counts` is given, how many
leads it holds now (the HTML report passes live counts).

The output is deterministic: it follows declaration order and nothing else,
so it can be diffed and kept as golden files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from ..model import graph
from ..model.expr import Expr, duration_text
from ..model.flow import Flow, Stage
from ..model.unparse import shorten, unparse
from ..wording import plural
from .colours import MOVE_COLOURS

Counts = Mapping[str, int]

# The flags of a stage that its node shows, in this order.
_MARKS = ("initial", "final", "manual")


@dataclass(frozen=True, slots=True)
class _Edge:
    source: str
    target: str
    kind: str  # "advance", "skip", "recycle" or "exit"
    label: str
    team: str | None = None  # an exit drawn from a whole team's box


@dataclass(frozen=True, slots=True)
class _Graph:
    """What both formats draw, in drawing order."""

    teams: tuple[tuple[str, str, tuple[Stage, ...]], ...]  # (name, title, stages)
    side: tuple[Stage, ...]
    edges: tuple[_Edge, ...]


def _gate(expr: Expr | None) -> str:
    return shorten(unparse(expr)) if expr is not None else ""


def _unique_stages(flow: Flow) -> dict[str, Stage]:
    """Stages by name, first declaration wins (duplicates are `check`'s job)."""
    stages: dict[str, Stage] = {}
    for stage in flow.stages:
        stages.setdefault(stage.name, stage)
    return stages


def _graph(flow: Flow, exits: bool) -> _Graph:
    stages = _unique_stages(flow)
    teams = []
    for team in flow.teams:
        members = tuple(stages[name] for name in dict.fromkeys(team.stages) if name in stages)
        if members:
            teams.append((team.name, team.title or team.name, members))
    side = tuple(stage for stage in stages.values() if stage.team is None)

    edges: list[_Edge] = []
    finals: list[str] = []
    for move in graph.moves(flow):
        if move.kind == "advance":
            edges.append(_Edge(move.source, move.target, "advance", _gate(stages[move.target].when)))
        elif move.kind == "skip":
            edges.append(_Edge(move.source, move.target, "skip", _gate(move.when) or "skip"))
        elif move.kind == "recycle":
            edges.append(
                _Edge(move.source, move.target, "recycle", "recycle auto" if move.auto else "recycle")
            )
        elif move.target not in finals:
            finals.append(move.target)
    if exits:
        # Every stage that does not end the way may exit to every final side
        # stage: one edge per team box (from its last stage) keeps that readable.
        for name, _, members in teams:
            edges.extend(_Edge(members[-1].name, final, "exit", "", name) for final in finals)
        for stage in side:
            if not stage.final:
                edges.extend(_Edge(stage.name, final, "exit", "") for final in finals)
    return _Graph(tuple(teams), side, tuple(edges))


def _label_lines(stage: Stage, counts: Counts | None) -> list[str]:
    """Name first, then what is special about the stage, one fact a line."""
    lines = [stage.name]
    marks = [mark for mark in _MARKS if getattr(stage, mark)]
    if marks:
        lines.append(", ".join(marks))
    if stage.sla_days is not None:
        lines.append(f"SLA {duration_text(stage.sla_days)}")
    if stage.capacity is not None:
        lines.append(f"capacity {stage.capacity}")
    if counts is not None:
        lines.append(plural(counts.get(stage.name, 0), "lead"))
    return lines


# --------------------------------------------------------------------------
# Mermaid
# --------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    """Text for a quoted Mermaid label: entity codes for the characters
    Mermaid or its HTML labels would read as syntax."""
    replacements = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}
    return "".join(replacements.get(char, char) for char in text)


def _mermaid_id(stage: str) -> str:
    # A prefix keeps stage names clear of Mermaid keywords (`end`, `graph`)
    # and of the `o`/`x` edge endings (`a --o b`).
    return f"s_{stage}"


def _mermaid_node(stage: Stage, counts: Counts | None) -> str:
    label = '"' + "<br/>".join(_mermaid_text(line) for line in _label_lines(stage, counts)) + '"'
    node_id = _mermaid_id(stage.name)
    if stage.final:
        return f"{node_id}((({label})))"
    if stage.initial:
        return f"{node_id}([{label}])"
    return f"{node_id}[{label}]"


_MERMAID_ARROWS = {"advance": "-->", "skip": "-.->", "recycle": "-.->", "exit": "-.->"}
_MERMAID_LINK_STYLES = {
    "skip": f"stroke:{MOVE_COLOURS['skip']},stroke-dasharray:6 4",
    "recycle": f"stroke:{MOVE_COLOURS['recycle']},stroke-dasharray:2 3",
    "exit": f"stroke:{MOVE_COLOURS['exit']},stroke-dasharray:2 3",
}


_TITLE_SAFE = str.maketrans({"&": "\uff06", "<": "\uff1c", ">": "\uff1e"})  # full-width & < >


def to_mermaid(flow: Flow, counts: Counts | None = None, *, exits: bool = False) -> str:
    """The flow as a Mermaid flowchart (left to right)."""
    graph = _graph(flow, exits)
    title = f"{flow.title or flow.name} (v{flow.version})"
    out = [
        "---",
        # JSON strings are valid YAML strings, so quotes and colons stay text;
        # Mermaid decodes no entities in a title and strips `<…>`, so the
        # characters HTML would eat are written as their full-width twins.
        f"title: {json.dumps(title.translate(_TITLE_SAFE), ensure_ascii=False)}",
        "---",
        "flowchart LR",
    ]
    for name, team_title, members in graph.teams:
        out.append(f'  subgraph t_{name}["{_mermaid_text(team_title)}"]')
        out.extend(f"    {_mermaid_node(stage, counts)}" for stage in members)
        out.append("  end")
    out.extend(f"  {_mermaid_node(stage, counts)}" for stage in graph.side)

    styles: dict[str, list[int]] = {}
    for index, edge in enumerate(graph.edges):
        arrow = _MERMAID_ARROWS[edge.kind]
        label = f'|"{_mermaid_text(edge.label)}"|' if edge.label else ""
        source = f"t_{edge.team}" if edge.team else _mermaid_id(edge.source)
        out.append(f"  {source} {arrow}{label} {_mermaid_id(edge.target)}")
        if edge.kind in _MERMAID_LINK_STYLES:
            styles.setdefault(edge.kind, []).append(index)
    for kind, indexes in styles.items():
        out.append(f"  linkStyle {','.join(map(str, indexes))} {_MERMAID_LINK_STYLES[kind]}")

    out.append("  classDef initial stroke-width:3px")
    out.append("  classDef final fill:#eeeeee")
    out.append("  classDef manual stroke-dasharray:4 2")
    stages = [stage for _, _, members in graph.teams for stage in members] + list(graph.side)
    for mark in _MARKS:
        marked = [_mermaid_id(stage.name) for stage in stages if getattr(stage, mark)]
        if marked:
            out.append(f"  class {','.join(marked)} {mark}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# Graphviz DOT
# --------------------------------------------------------------------------


def _dot_quote(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r\n", "\\n").replace("\n", "\\n") + '"'


def _dot_attrs(attrs: Mapping[str, str]) -> str:
    return "[" + ", ".join(f"{key}={value}" for key, value in attrs.items()) + "]"


def _dot_node(stage: Stage, counts: Counts | None) -> str:
    attrs = {"label": _dot_quote("\n".join(_label_lines(stage, counts)))}
    if stage.final:
        attrs["shape"] = "doublecircle"
    if stage.initial:
        attrs["penwidth"] = "2"
    if stage.manual:
        attrs["style"] = '"rounded,dashed"'
    return f"{_dot_quote(stage.name)} {_dot_attrs(attrs)};"


def _dot_colour(colour: str) -> dict[str, str]:
    return {"color": _dot_quote(colour), "fontcolor": _dot_quote(colour)}


_DOT_EDGE_STYLES: dict[str, dict[str, str]] = {
    "advance": {},
    "skip": {"style": "dashed", **_dot_colour(MOVE_COLOURS["skip"])},
    # constraint=false: a move back must not pull its source before its
    # target in the left-to-right ranking.
    "recycle": {"style": "dotted", **_dot_colour(MOVE_COLOURS["recycle"]), "constraint": "false"},
    "exit": {"style": "dotted", "color": _dot_quote(MOVE_COLOURS["exit"]), "arrowsize": "0.5"},
}


def to_dot(flow: Flow, counts: Counts | None = None, *, exits: bool = False) -> str:
    """The flow as a Graphviz digraph (left to right)."""
    graph = _graph(flow, exits)
    title = f"{flow.title or flow.name} (v{flow.version})"
    out = [
        f"digraph {_dot_quote(flow.name)} {{",
        f"  graph [rankdir=LR, compound=true, labelloc=t, fontname=Helvetica, label={_dot_quote(title)}];",
        "  node [shape=box, style=rounded, fontname=Helvetica, fontsize=11];",
        "  edge [fontname=Helvetica, fontsize=9];",
    ]
    for name, team_title, members in graph.teams:
        out.append(f"  subgraph {_dot_quote('cluster_' + name)} {{")
        out.append(f"    label={_dot_quote(team_title)};")
        out.append('    style=rounded; color="#999999";')
        out.extend(f"    {_dot_node(stage, counts)}" for stage in members)
        out.append("  }")
    out.extend(f"  {_dot_node(stage, counts)}" for stage in graph.side)
    for edge in graph.edges:
        attrs = dict(_DOT_EDGE_STYLES[edge.kind])
        if edge.team:
            attrs["ltail"] = _dot_quote("cluster_" + edge.team)
        if edge.label:
            attrs = {"label": _dot_quote(edge.label), **attrs}
        suffix = f" {_dot_attrs(attrs)}" if attrs else ""
        out.append(f"  {_dot_quote(edge.source)} -> {_dot_quote(edge.target)}{suffix};")
    out.append("}")
    return "\n".join(out) + "\n"
