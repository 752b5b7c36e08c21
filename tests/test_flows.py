"""Every flow shipped in flows/ parses and checks clean: no errors, no warnings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from saleflow.check.rules import check
from saleflow.language.parse import load_flow, parse_flow
from saleflow.runtime.testing import run_tests

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
    shipped = (ROOT / "flows" / "the_model.flow").read_text(encoding="utf-8")
    # The example word for word, then only test blocks (SPEC §7) and comments.
    assert shipped.startswith(example.group(1))
    rest = shipped[len(example.group(1)) :]
    assert rest.lstrip().startswith(("test ", "#")), rest[:80]
    assert parse_flow(example.group(1)) == load_flow(ROOT / "flows" / "the_model.flow")
    tail = parse_flow("flow t\n" + rest)
    assert tail.tests and tail == parse_flow("flow t"), "only test blocks may follow the example"


@pytest.mark.parametrize("path", FLOWS, ids=lambda path: path.name)
def test_flow_has_tests_and_they_pass(path: Path) -> None:
    """`saleflow test` on every shipped flow: at least one test, all pass
    (the tests are the shipped flows' best documentation)."""
    flow = load_flow(path)
    results = run_tests(flow)
    assert results, f"{path.name} has no test blocks"
    failed = [r.render(flow.source) for r in results if not r.passed]
    assert not failed, "\n".join(failed)


def test_saleflow_test_command_runs_every_shipped_flow() -> None:
    from click.testing import CliRunner

    from saleflow.cli.app import main

    result = CliRunner().invoke(main, ["test", *map(str, FLOWS)])
    assert result.exit_code == 0, result.output
    total = sum(len(load_flow(path).tests) for path in FLOWS)
    assert result.output.splitlines()[-1] == f"{total} passed, 0 failed"


def test_the_model_carries_the_spec_test_block_and_it_passes() -> None:
    if not SPEC.is_file():
        pytest.skip("shared/SPEC.md is not beside this checkout")
    spec = SPEC.read_text(encoding="utf-8")
    example = re.search(r"### Tests in the flow file.*?```\n(test .*?)```", spec, re.S)
    assert example, "SPEC §7 test block not found"
    shipped = (ROOT / "flows" / "the_model.flow").read_text(encoding="utf-8")
    assert example.group(1) in shipped
    name = re.match(r'test "([^"]+)"', example.group(1))
    assert name is not None
    [result] = run_tests(load_flow(ROOT / "flows" / "the_model.flow"), select=name.group(1))
    assert result.passed, result.message
