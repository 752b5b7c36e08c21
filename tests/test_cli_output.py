"""`-o/--output FILE`: ``-`` is stdout, as in most command-line tools.

Every command with `-o` (graph, report, simulate, export, audit anchor)
prints to stdout with `-o -`, the same text as without `-o`, and writes no
file called "-"; a real path is still written.  On SQLite files: the option
is the CLI's, not the store's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from saleflow.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")
NOW = "2026-03-02T09:00:00+00:00"


@pytest.fixture
def here(tmp_path: Path) -> Iterator[Path]:
    """A working folder with a database holding one lead of the_model."""
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        db = f"sqlite:///{tmp_path / 'crm.db'}"
        for args in (
            ["deploy", THE_MODEL],
            ["lead", "add", "acme", "--flow", "the_model", "--set", "email=cto@acme.example"],
            ["event", "acme", "web_visit"],
        ):
            result = CliRunner().invoke(main, ["--db", db, "--now", NOW, *args])
            assert result.exit_code == 0, (args, result.output)
        yield tmp_path
    finally:
        os.chdir(old)


COMMANDS = [
    ["graph", THE_MODEL],
    ["report", "--flow", "the_model", "--format", "json"],
    ["simulate", THE_MODEL, "--format", "json"],
    ["export", "stages"],
    ["audit", "anchor"],
]


def _run(here: Path, *args: str) -> tuple[int, str]:
    db = f"sqlite:///{here / 'crm.db'}"
    result = CliRunner().invoke(main, ["--db", db, "--now", NOW, *args])
    return result.exit_code, result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_dash_is_stdout(here: Path, command: list[str]) -> None:
    before = sorted(p.name for p in here.iterdir())
    code, plain = _run(here, *command)
    assert code == 0 and plain, plain
    code, dashed = _run(here, *command, "-o", "-")
    assert code == 0
    assert not (here / "-").exists()
    assert sorted(p.name for p in here.iterdir()) == before
    assert dashed == plain  # --now fixes the moment a report says it was made


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_path_is_still_a_file(here: Path, command: list[str]) -> None:
    code, out = _run(here, *command, "-o", "out.txt")
    assert code == 0 and out == ""
    assert (here / "out.txt").read_text(encoding="utf-8")
