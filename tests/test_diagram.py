"""Mermaid and DOT diagrams: golden files, the drawing rules, escaping.

Regenerate the golden files with `SALEFLOW_REGEN=1 pytest tests/test_diagram.py`
and read the diff before committing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from saleflow.language.parse import load_flow, parse_flow
from saleflow.model.flow import Flow
from saleflow.views.diagram import to_dot, to_mermaid

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "diagram"
FLOWS = sorted((ROOT / "flows").glob("*.flow"))

# Titles, gates and labels with every character either format treats as syntax.
AWKWARD = r"""
flow awkward version 3 "Quotes \"here\" & <there> #1"

field note one of [a, b]   default a
field tag  text
event ping channel web

team one "Team \"One\" <a&b>" {
  stage start  initial
  stage end    when tag == "say \"hi\" <b> & #x;" or note == b
  stage graph  manual  sla 1 days  capacity 3  when ping >= 1
}
stage gone  final  when tag is set

skip start -> graph  when tag == "a > b"
recycle graph -> end  when ping in last 7 days == 0  auto
"""

Render = Callable[..., str]
FORMATS: dict[str, Render] = {"mmd": to_mermaid, "dot": to_dot}


def _awkward() -> Flow:
    return parse_flow(AWKWARD, "awkward.flow")


CASES: dict[str, tuple[Callable[[], Flow], Mapping[str, int] | None, bool]] = {
    **{path.stem: ((lambda path=path: load_flow(path)), None, False) for path in FLOWS},
    "the_model.live": (
        lambda: load_flow(ROOT / "flows" / "the_model.flow"),
        {"awareness": 120, "lead": 1, "mql": 14, "opportunity": 50, "lost": 7},
        True,
    ),
    "awkward": (_awkward, {"start": 2}, True),
}


def _render(case: str, ext: str) -> str:
    make_flow, counts, exits = CASES[case]
    return FORMATS[ext](make_flow(), counts, exits=exits)


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str, ext: str) -> None:
    text = _render(case, ext)
    golden = GOLDEN / f"{case}.{ext}"
    if os.environ.get("SALEFLOW_REGEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text, encoding="utf-8")
    assert golden.is_file(), f"no golden file {golden}; run with SALEFLOW_REGEN=1"
    assert text == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("case", sorted(CASES))
def test_dot_is_valid_graphviz(case: str) -> None:
    dot = shutil.which("dot")
    if dot is None:
        if os.environ.get("CI"):
            pytest.fail("graphviz `dot` is missing; .ci/run installs it")
        pytest.skip("graphviz `dot` is not installed")
    done = subprocess.run(
        [dot, "-Tsvg"], input=_render(case, "dot"), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "<svg" in done.stdout


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_output_is_deterministic(ext: str) -> None:
    assert _render("the_model", ext) == _render("the_model", ext)


# -- the drawing rules, on the_model ------------------------------------------


@pytest.fixture(scope="module")
def model() -> Flow:
    return load_flow(ROOT / "flows" / "the_model.flow")


def test_mermaid_teams_are_subgraphs_titled_with_the_team_title(model: Flow) -> None:
    text = to_mermaid(model)
    assert 'subgraph t_marketing["Marketing"]' in text
    assert 'subgraph t_customer_success["Customer Success"]' in text
    assert text.count("\n  end\n") == len(model.teams)


def test_mermaid_edges_by_kind(model: Flow) -> None:
    lines = to_mermaid(model).splitlines()
    assert '  s_nurturing -->|"score #gt;= 60"| s_mql' in lines
    assert "  s_closed_won --> s_onboarding" in lines  # no gate, no label
    assert '  s_lead -.->|"inbound_question #gt;= 1 and bant"| s_sql' in lines
    assert '  s_opportunity -.->|"recycle auto"| s_nurturing' in lines
    assert '  s_contacting -.->|"recycle"| s_nurturing' in lines
    edges = [line for line in lines if " --" in line or " -.-" in line]
    skips = [i for i, line in enumerate(edges) if "-.->" in line and "recycle" not in line]
    recycles = [i for i, line in enumerate(edges) if "recycle" in line]
    assert f"  linkStyle {','.join(map(str, skips))} stroke:#2a7ab0,stroke-dasharray:6 4" in lines
    assert f"  linkStyle {','.join(map(str, recycles))} stroke:#c0392b,stroke-dasharray:2 3" in lines


def test_mermaid_marks_initial_final_manual_capacity_sla(model: Flow) -> None:
    text = to_mermaid(model)
    assert 's_awareness(["awareness<br/>initial"])' in text
    assert 's_lost((("lost<br/>final")))' in text
    assert 's_proposal["proposal<br/>manual"]' in text
    assert 's_opportunity["opportunity<br/>capacity 50"]' in text
    assert 's_contacting["contacting<br/>SLA 2 days"]' in text
    assert "class s_proposal manual" in text


def test_long_gates_are_shortened(model: Flow) -> None:
    assert '"authority == decision_maker and budget…"' in to_mermaid(model)


def test_counts_are_shown_for_every_stage(model: Flow) -> None:
    text = to_mermaid(model, {"lead": 1, "mql": 12})
    assert 's_lead["lead<br/>1 lead"]' in text
    assert 's_mql["mql<br/>12 leads"]' in text
    assert 's_sal["sal<br/>0 leads"]' in text


def test_exits_only_when_asked(model: Flow) -> None:
    assert "s_lost\n" not in to_mermaid(model).replace("s_lost(((", "")
    with_exits = to_mermaid(model, exits=True)
    for team in model.teams:
        assert f"  t_{team.name} -.-> s_lost" in with_exits
        assert f"  t_{team.name} -.-> s_disqualified" in with_exits
    dot = to_dot(model, exits=True)
    assert 'ltail="cluster_marketing"' in dot
    assert "compound=true" in dot


def test_dot_edges_by_kind(model: Flow) -> None:
    lines = to_dot(model).splitlines()
    assert '  "nurturing" -> "mql" [label="score >= 60"];' in lines
    assert '  "closed_won" -> "onboarding";' in lines
    skip = next(line for line in lines if line.startswith('  "lead" -> "sql"'))
    assert "style=dashed" in skip
    recycle = next(line for line in lines if 'label="recycle auto"' in line)
    assert recycle.startswith('  "opportunity" -> "nurturing"')
    assert "style=dotted" in recycle
    assert 'color="#c0392b"' in recycle
    assert "constraint=false" in recycle


def test_dot_clusters_and_node_marks(model: Flow) -> None:
    text = to_dot(model)
    assert 'subgraph "cluster_field_sales" {\n    label="Field Sales";' in text
    assert '"lost" [label="lost\\nfinal", shape=doublecircle];' in text
    assert '"awareness" [label="awareness\\ninitial", penwidth=2];' in text
    assert '"proposal" [label="proposal\\nmanual", style="rounded,dashed"];' in text


# -- escaping -------------------------------------------------------------------


def test_mermaid_escapes_syntax_characters() -> None:
    text = to_mermaid(_awkward())
    # YAML front matter; Mermaid shows titles without decoding entities.
    assert 'title: "Quotes \\"here\\" \uff06 \uff1cthere\uff1e #1 (v3)"' in text
    assert 'subgraph t_one["Team #quot;One#quot; #lt;a#amp;b#gt;"]' in text
    assert r"#quot;say \#quot;hi\#quot; #lt;b#gt; #amp; #35;x;#quot;" in text
    # Stage names that are Mermaid keywords are safe behind the id prefix.
    assert "s_end[" in text
    assert "s_graph[" in text


def test_dot_escapes_quotes_and_backslashes() -> None:
    text = to_dot(_awkward())
    assert 'label="Quotes \\"here\\" & <there> #1 (v3)"' in text
    assert 'label="Team \\"One\\" <a&b>"' in text
    assert r'label="tag == \"say \\\"hi\\\" <b> & #x;\" or note…"' in text
