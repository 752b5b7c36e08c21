"""Every flow shipped in flows/ parses and checks clean: no errors, no warnings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from saleflow.check import check
from saleflow.parse import load_flow

ROOT = Path(__file__).resolve().parent.parent
FLOWS = sorted((ROOT / "flows").glob("*.flow"))
SPEC = ROOT.parent / "shared" / "SPEC.md"


def test_the_shipped_flows_are_there() -> None:
    assert {path.name for path in FLOWS} >= {"the_model.flow", "demand_waterfall.flow", "product_led.flow"}


@pytest.mark.parametrize("path", FLOWS, ids=lambda path: path.name)
def test_flow_checks_clean(path: Path) -> None:
    flow = load_flow(path)
    diagnostics = check(flow)
    assert not diagnostics, "\n".join(d.render(flow.source) for d in diagnostics)
    assert flow.name == path.stem


def test_the_model_is_the_spec_example_verbatim() -> None:
    if not SPEC.is_file():
        pytest.skip("shared/SPEC.md is not beside this checkout")
    spec = SPEC.read_text(encoding="utf-8")
    example = re.search(r"```\n(# The Model:.*?)```", spec, re.S)
    assert example, "SPEC §2 example not found"
    assert (ROOT / "flows" / "the_model.flow").read_text(encoding="utf-8") == example.group(1)
