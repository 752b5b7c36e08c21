"""The grammar ships inside the wheel: an installed (not editable) saleflow
parses, checks and runs a flow from a folder far from the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("saleflow-*.whl")
    return found


def test_wheel_holds_grammar_migrations_and_store(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "saleflow/grammar/saleflow.lark" in names
    assert "saleflow/migrations/versions/0001_initial.py" in names
    assert "saleflow/store/__init__.py" in names
    packaged = zipfile.ZipFile(wheel).read("saleflow/grammar/saleflow.lark").decode()
    assert packaged == (ROOT / "grammar" / "saleflow.lark").read_text()


def test_installed_wheel_parses_and_runs_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    flow = tmp_path / "m.flow"
    flow.write_text((ROOT / "flows" / "the_model.flow").read_text())
    script = (
        "import saleflow.parse as p, sys\n"
        "print(p.grammar_path())\n"
        "from saleflow import Engine\n"
        f"e = Engine.open({str(flow)!r}, db='sqlite:///' + {str(tmp_path / 'w.db')!r}, now='2026-01-01')\n"
        "print(e.add_lead('a', email='x@y.z').stage)\n"
    )
    # Only the installed copy and the dependencies are importable: the
    # source tree is neither on the path nor the working directory.
    deps = [p for p in sys.path if "site-packages" in p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *deps]), "SALEFLOW_CACHE_DIR": ""}
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = {[str(target), *deps]!r}\n" + script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    grammar, stage = result.stdout.split()
    assert grammar.startswith(str(target))
    assert stage == "lead"
