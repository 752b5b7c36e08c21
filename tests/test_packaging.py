"""What a user installs works: the sdist and the wheel built from it carry the
grammar, the migrations and the licence, and a fresh virtualenv with the
wheel installed (without the `postgresql` extra) checks and runs a flow far
from the source tree.

One sdist, one wheel and one virtualenv serve every test of this module
(about 15 s, most of it pip resolving the dependencies from the index)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

import saleflow

ROOT = Path(__file__).resolve().parent.parent
NAME = f"saleflow-{saleflow.__version__}"
PG_URL = "postgresql://postgres@127.0.0.1/postgres"


def _run(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _source_copy(dest: Path) -> Path:
    """The project as a clean clone would have it (tracked and new files, no
    build leftovers such as a stale `saleflow.egg-info`, which setuptools
    would read into the sdist)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
    )
    if listed.returncode != 0:
        pytest.skip("the sdist test builds from a git checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = _source_copy(tmp_path_factory.mktemp("tree"))
    out = tmp_path_factory.mktemp("sdist")
    hook = f"from setuptools import build_meta; build_meta.build_sdist({str(out)!r})"
    _run([sys.executable, "-c", hook], cwd=tree)
    return out / f"{NAME}.tar.gz"


@pytest.fixture(scope="module")
def wheel(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from the sdist alone, as `pip install saleflow-….tar.gz` builds it."""
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _run([*pip, "-w", str(out), str(sdist)], cwd=out)
    (found,) = out.glob("saleflow-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the wheel and its dependencies: no psycopg,
    no source tree.  Returns its `bin` folder."""
    home = tmp_path_factory.mktemp("venv") / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(home)])
    python = home / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)])
    return home / "bin"


def _outside(venv: Path, tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run one of the virtualenv's programs in a folder far from the source tree."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SALEFLOW_DB", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv}{os.pathsep}{env.get('PATH', '')}"
    env["SALEFLOW_CACHE_DIR"] = ""
    return subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)


# --------------------------------------------------------------------------
# The artefacts
# --------------------------------------------------------------------------


def test_sdist_carries_grammar_licence_and_package_data(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.removeprefix(f"{NAME}/") for name in tar.getnames()}
        grammar = tar.extractfile(f"{NAME}/grammar/saleflow.lark")
        assert grammar is not None
        assert grammar.read().decode() == (ROOT / "grammar" / "saleflow.lark").read_text()
    assert {"LICENSE", "README.md", "pyproject.toml", "grammar/saleflow.lark"} <= names
    assert {"saleflow/py.typed", "saleflow/migrations/script.py.mako"} <= names
    assert "setup.py" not in names


def test_wheel_holds_grammar_migrations_licence_and_every_module(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    names = set(archive.namelist())
    assert "saleflow/grammar/saleflow.lark" in names
    assert (
        archive.read("saleflow/grammar/saleflow.lark").decode()
        == (ROOT / "grammar" / "saleflow.lark").read_text()
    )
    assert {"saleflow/py.typed", "saleflow/migrations/script.py.mako"} <= names
    assert f"{NAME}.dist-info/licenses/LICENSE" in names
    # Every module of the source tree, in every (new) subpackage, is found.
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "saleflow").rglob("*.py")}
    assert not modules - names, "missing from the wheel"
    assert not {n for n in names if n.endswith(".py") and not n.startswith("saleflow/")}


def test_wheel_metadata_version_and_postgresql_extra(wheel: Path) -> None:
    metadata = HeaderParser().parsestr(zipfile.ZipFile(wheel).read(f"{NAME}.dist-info/METADATA").decode())
    assert metadata["Version"] == saleflow.__version__
    assert metadata["License-Expression"] == "MIT"
    requires = metadata.get_all("Requires-Dist") or []
    psycopg = [r for r in requires if r.startswith("psycopg")]
    assert psycopg and all('extra == "postgresql"' in r for r in psycopg), requires
    assert "postgresql" in (metadata.get_all("Provides-Extra") or [])
    assert any(r.startswith("saleflow[postgresql]") and 'extra == "dev"' in r for r in requires)


# --------------------------------------------------------------------------
# Installed in a fresh virtualenv
# --------------------------------------------------------------------------


def test_installed_cli_checks_a_flow_outside_the_source_tree(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "m.flow").write_text((ROOT / "flows" / "the_model.flow").read_text())
    result = _outside(venv, tmp_path, ["saleflow", "check", "m.flow"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok: m.flow"
    module = _outside(venv, tmp_path, ["python", "-m", "saleflow", "check", "m.flow"])
    assert (module.returncode, module.stdout) == (0, result.stdout)
    version = _outside(venv, tmp_path, ["saleflow", "--version"])
    assert version.stdout.strip() == f"saleflow, version {saleflow.__version__}"


def test_installed_package_parses_and_runs_with_its_own_grammar(venv: Path, tmp_path: Path) -> None:
    flow = tmp_path / "m.flow"
    flow.write_text((ROOT / "flows" / "the_model.flow").read_text())
    script = (
        "import saleflow.language.parse as p\n"
        "print(p.grammar_path())\n"
        "from saleflow import Engine\n"
        f"e = Engine.open({str(flow)!r}, db='sqlite:///' + {str(tmp_path / 'w.db')!r}, now='2026-01-01')\n"
        "print(e.add_lead('a', email='x@y.z').stage)\n"
    )
    result = _outside(venv, tmp_path, ["python", "-I", "-c", script])
    assert result.returncode == 0, result.stderr
    grammar, stage = result.stdout.split()
    assert grammar.startswith(str(venv.parent)), grammar
    assert stage == "lead"


def test_postgresql_without_the_extra_names_the_fix(venv: Path, tmp_path: Path) -> None:
    probe = _outside(venv, tmp_path, ["python", "-c", "import psycopg"])
    assert probe.returncode != 0, "the fresh virtualenv should not have psycopg"
    for url in (PG_URL, PG_URL.replace("postgresql:", "postgresql+psycopg:")):
        result = _outside(venv, tmp_path, ["saleflow", "--db", url, "show", "x"])
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == (
            f"error: cannot use the database {url.replace('postgresql:', 'postgresql+psycopg:')}: "
            "PostgreSQL needs the psycopg driver (pip install 'saleflow[postgresql]')\n"
        )
