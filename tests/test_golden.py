"""Golden files: `saleflow check` on each `tests/flows/invalid/*.flow` prints
exactly its `*.expected` (every diagnostic, rendered with the source line and
caret, then the summary line).

Run with `SALEFLOW_REGEN=1` to rewrite the `.expected` files after a
deliberate change of wording; review the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from saleflow.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "flows" / "invalid"
FLOWS = sorted(INVALID.glob("*.flow"))


def test_there_are_enough_golden_files() -> None:
    assert len(FLOWS) >= 12
    for path in FLOWS:
        assert path.with_suffix(".expected").is_file() or os.environ.get("SALEFLOW_REGEN"), path


@pytest.mark.parametrize("path", FLOWS, ids=lambda p: p.stem)
def test_golden(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # so that the output names the file as users write it
    relative = path.relative_to(ROOT).as_posix()
    result = CliRunner().invoke(main, ["check", relative], catch_exceptions=False)
    output = result.stdout
    assert result.stderr == ""
    assert "error[" in output or "warning[" in output, "a golden file must have diagnostics"
    assert result.exit_code == (1 if "error[" in output else 0), output

    expected = path.with_suffix(".expected")
    if os.environ.get("SALEFLOW_REGEN"):
        expected.write_text(output, encoding="utf-8")
    assert output == expected.read_text(encoding="utf-8")
