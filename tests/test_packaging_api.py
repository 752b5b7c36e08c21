"""The package's own face, in the development install: one version
everywhere, `python -m saleflow`, shell completion, and exported names that
stay lazy at run time but have their real types for mypy."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import saleflow

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "saleflow"


def _saleflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )


def test_one_version_for_package_metadata_and_cli() -> None:
    assert saleflow.__version__ == version("saleflow"), "reinstall: make venv"
    result = _saleflow("--version")
    assert result.returncode == 0
    assert result.stdout == f"saleflow, version {saleflow.__version__}\n"


def test_python_m_saleflow_is_the_cli() -> None:
    run = [sys.executable, "-m", "saleflow"]
    checked = subprocess.run(
        [*run, "check", "flows/the_model.flow"], cwd=ROOT, capture_output=True, text=True
    )
    assert (checked.returncode, checked.stdout) == (0, "ok: flows/the_model.flow\n")
    helped = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: saleflow [OPTIONS] COMMAND")
    bad = subprocess.run([*run, "nonsense"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _saleflow_completion saleflow"),
        ("zsh", "compdef _saleflow_completion saleflow"),
        ("fish", "complete --no-files --command saleflow"),
    ],
)
def test_shell_completion_script(shell: str, marker: str) -> None:
    result = _saleflow(env={"_SALEFLOW_COMPLETE": f"{shell}_source"})
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout


def test_shell_completion_completes_commands() -> None:
    env = {"_SALEFLOW_COMPLETE": "bash_complete", "COMP_WORDS": "saleflow ch", "COMP_CWORD": "1"}
    result = _saleflow(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,check"]


def _typed_exports() -> dict[str, str]:
    """The names imported under `if TYPE_CHECKING:` in saleflow/__init__.py, by module."""
    tree = ast.parse((ROOT / "saleflow" / "__init__.py").read_text())
    (block,) = [
        node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
    ]
    found: dict[str, str] = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        found.update({alias.name: node.module for alias in node.names})
    return found


def test_lazy_exports_and_their_types_agree() -> None:
    assert _typed_exports() == saleflow._EXPORTS
    assert saleflow.__all__ == [*sorted(saleflow._EXPORTS), "__version__"]
    for name in saleflow.__all__:
        assert getattr(saleflow, name) is not None
    assert set(saleflow.__all__) <= set(dir(saleflow))
    with pytest.raises(AttributeError):
        _ = saleflow.Nonesuch  # type: ignore[attr-defined]


def test_import_saleflow_stays_cheap() -> None:
    code = (
        "import saleflow, sys; print(sorted(m for m in ('sqlalchemy', 'lark', 'click') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (0, "[]\n"), result.stderr


def test_mypy_sees_the_real_type_of_every_export(tmp_path: Path) -> None:
    """`from saleflow import Engine` is `type[Engine]` to mypy, not `Any`:
    assigning each export to an `int` must be an error naming its type."""
    names = sorted(saleflow._EXPORTS)
    snippet = tmp_path / "uses_saleflow.py"
    snippet.write_text(
        f"from saleflow import {', '.join(names)}\n" + "".join(f"_{n}: int = {n}\n" for n in names)
    )
    # The project's configuration and mypy cache (cwd ROOT): `make lint` shares the cache.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", str(snippet)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stdout.splitlines() if "error:" in line]
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(errors) == len(names), result.stdout
    aliases = {"AuditEntry": "JournalEntry"}  # a §3 audit entry is a journal entry
    for line, name in zip(errors, names, strict=True):
        real = aliases.get(name, name)
        assert f'expression has type "type[{real}]", variable has type "int"' in line, line
