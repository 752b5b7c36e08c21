"""The command table of saleflow/cli/app.py and what a command imports.

`COMMANDS` registers every command by module path, and the root group
imports a command's module only when that command runs: `--help` lists them
all from the table, and `show` on a database whose flow is deployed loads
neither the parser (Lark) nor the checker nor Alembic.  Which modules a run
imports is a behaviour, checked here in a fresh interpreter; how long a run
takes is measured in bench/startup.py, not tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from saleflow.cli.app import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
THE_MODEL = str(ROOT / "flows" / "the_model.flow")

# Runs the CLI in this interpreter, then writes the names of the loaded
# modules to the file named by the first argument.
_PROBE = """
import json, sys
from saleflow.cli.app import main
out, args = sys.argv[1], sys.argv[2:]
try:
    main(args, prog_name="saleflow")
except SystemExit as done:
    code = done.code
with open(out, "w") as file:
    json.dump({"code": code, "modules": sorted(sys.modules)}, file)
"""


def loaded_by(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, set[str], str]:
    """(exit code, modules loaded, stdout) of `saleflow ARGS` in a fresh interpreter."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )
    assert out.exists(), done.stderr
    found = json.loads(out.read_text())
    return found["code"], set(found["modules"]), done.stdout


def _top(modules: set[str], *names: str) -> set[str]:
    return {m for m in modules if m.split(".")[0] in names}


# -- the table -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_line_of_the_table_names_its_command(name: str) -> None:
    module, attribute, summary = COMMANDS[name]
    command = getattr(import_module(module), attribute)
    assert isinstance(command, click.Command)
    assert command.name == name
    placeholder = click.Command(name, help=summary)  # what --help lists before loading the command
    for limit in (30, 60, 200):
        assert placeholder.get_short_help_str(limit) == command.get_short_help_str(limit)


def test_the_table_is_sorted() -> None:
    assert list(COMMANDS) == sorted(COMMANDS)


def test_help_lists_every_command_without_importing_one(tmp_path: Path) -> None:
    code, modules, shown = loaded_by(tmp_path, "--help")
    assert code == 0
    commands = shown.split("Commands:\n", 1)[1]
    assert [line.split()[0] for line in commands.splitlines() if line.strip()] == sorted(COMMANDS)
    modules_of_commands = {module for module, _, _ in COMMANDS.values()}
    assert not modules & modules_of_commands
    assert not _top(modules, "sqlalchemy", "lark", "alembic", "transitions")


def test_help_from_the_table_is_the_help_of_the_loaded_commands() -> None:
    lazy = CliRunner().invoke(main, ["--help"], terminal_width=100).output
    for name in COMMANDS:
        main.get_command(click.Context(main), name)  # now loaded: listed from the command itself
    assert set(COMMANDS) <= set(main.commands)
    assert CliRunner().invoke(main, ["--help"], terminal_width=100).output == lazy


def test_a_command_loads_only_its_own_module(tmp_path: Path) -> None:
    code, modules, _ = loaded_by(tmp_path, "graph", THE_MODEL)
    assert code == 0
    assert "saleflow.cli.flows" in modules
    assert not modules & {"saleflow.cli.leads", "saleflow.cli.reports", "saleflow.cli.migrate"}
    assert not _top(modules, "sqlalchemy", "alembic")


def test_an_unknown_command_is_still_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "saleflow", "shwo", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: No such command 'shwo'")


# -- what a command on a lead imports --------------------------------------------


def _deployed(db_url: str, tmp_path: Path) -> dict[str, str]:
    """A database with the_model deployed and one lead, and the environment
    (a cache folder of the test's own) the commands below run in."""
    env = {"SALEFLOW_CACHE_DIR": str(tmp_path / "cache"), "SALEFLOW_DB": db_url}
    runner = CliRunner(env=env)
    assert runner.invoke(main, ["deploy", THE_MODEL]).exit_code == 0
    assert runner.invoke(main, ["lead", "add", "L1", "--flow", "the_model"]).exit_code == 0
    return env


def test_show_imports_neither_the_parser_nor_the_checker_nor_alembic(db_url: str, tmp_path: Path) -> None:
    env = _deployed(db_url, tmp_path)
    code, modules, shown = loaded_by(tmp_path, "show", "L1", env=env)
    assert code == 0
    assert shown.startswith("lead L1 — flow the_model version 1")
    assert not _top(modules, "lark", "alembic")
    assert not modules & {"saleflow.language.parse", "saleflow.check.rules", "saleflow.runtime.audit"}
    assert "sqlalchemy" in modules  # the probe saw the real run


def test_without_the_cache_show_parses_and_still_skips_alembic(db_url: str, tmp_path: Path) -> None:
    env = {**_deployed(db_url, tmp_path), "SALEFLOW_CACHE_DIR": ""}
    code, modules, shown = loaded_by(tmp_path, "show", "L1", env=env)
    assert code == 0
    assert shown.startswith("lead L1 — flow the_model version 1")
    assert "lark" in modules and "alembic" not in modules


def test_alembic_is_loaded_when_there_is_a_schema_to_create(sqlite_url: str, tmp_path: Path) -> None:
    code, modules, _ = loaded_by(tmp_path, "--db", sqlite_url, "leads")
    assert code == 0
    assert "alembic" in modules
    code, modules, _ = loaded_by(tmp_path, "--db", sqlite_url, "leads")
    assert code == 0
    assert "alembic" not in modules
