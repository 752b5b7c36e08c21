"""What README.md shows works: its flow examples check clean and its Python
examples run (in a scratch folder that sees the repository's flows/)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from saleflow.check.rules import check
from saleflow.language.parse import parse_flow

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLOW_EXAMPLES = re.findall(r"```flow\n(.*?)```", README, re.S)
PYTHON_EXAMPLES = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_examples() -> None:
    assert FLOW_EXAMPLES
    assert PYTHON_EXAMPLES


@pytest.mark.parametrize("text", FLOW_EXAMPLES)
def test_flow_example_checks_clean(text: str) -> None:
    diagnostics = check(parse_flow(text, "README.md"))
    assert not diagnostics, "\n".join(d.render(text) for d in diagnostics)


@pytest.mark.parametrize("code", PYTHON_EXAMPLES)
def test_python_example_runs(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "flows").symlink_to(ROOT / "flows")
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
