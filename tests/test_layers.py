"""Imports only point down the layers of DESIGN.md.

Every module of the package must be in `LAYERS`; a new module is placed
there on purpose, not by accident.  Modules of a subpackage count as the
subpackage (`saleflow/store/*.py` is "store").  Same-layer imports are
allowed; `__init__` re-exports the API and may import anything, so no module
may import from it.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "saleflow"

LAYERS: dict[str, int] = {
    "errors": 0,
    "jsontext": 0,
    "limits": 0,
    "csvcell": 0,
    "model": 1,
    "records": 1,
    "journal": 1,
    "graph": 1,
    "unparse": 1,
    "identity": 1,
    "parse": 2,
    "check": 2,
    "checktests": 2,
    "flowdiff": 2,
    "guards": 2,
    "coerce": 2,
    "compile": 3,
    "store": 3,
    "migrations": 3,
    "engine": 4,
    "migration": 4,
    "progress": 4,
    "audit": 4,
    "anchor": 4,
    "importer": 4,
    "tick": 4,
    "testing": 4,
    "simulate": 5,
    "report": 5,
    "export": 5,
    "diagram": 5,
    "html": 5,
    "cli": 5,
    "serialise": 5,
    "service": 5,
    "__init__": 6,
    "__main__": 6,
}


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    module: str
    imported: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.module} (layer {LAYERS.get(self.module)}) imports "
            f"{self.imported} (layer {LAYERS.get(self.imported)})"
        )


def unit_of(path: Path, root: Path) -> str:
    """The table entry a file belongs to: `saleflow/x.py` → "x",
    `saleflow/store/y.py` → "store", `saleflow/__init__.py` → "__init__"."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else path.stem


def _package_parts(path: Path, root: Path) -> list[str]:
    """The dotted package a file lives in, as parts: ["saleflow", "store"]."""
    return [root.name, *path.relative_to(root).parts[:-1]]


def _is_module(root: Path, name: str, known: Collection[str]) -> bool:
    return name in known or (root / f"{name}.py").is_file() or (root / name).is_dir()


def imported_units(tree: ast.AST, path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, unit) for every import of the package in `tree`, at any depth
    (function-level and `TYPE_CHECKING` imports count too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        modules: list[list[str]] = []
        if isinstance(node, ast.Import):
            modules = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base: list[str] = []
            if node.level:
                package = _package_parts(path, root)
                base = package[: len(package) - (node.level - 1)]
            modules = [[*base, *(node.module.split(".") if node.module else [])]]
            if modules == [[root.name]]:
                # `from . import x` / `from saleflow import x`: a module, or a
                # name that `__init__` re-exports.
                modules = [
                    [root.name, alias.name] if _is_module(root, alias.name, LAYERS) else [root.name]
                    for alias in node.names
                ]
        for module in modules:
            if module and module[0] == root.name:
                found.append((node.lineno, module[1] if len(module) > 1 else "__init__"))
    return found


def scan(root: Path) -> tuple[list[str], list[Violation]]:
    """(files whose unit has no layer, imports that point up)."""
    unknown: list[str] = []
    violations: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        unit = unit_of(path, root)
        shown = str(path.relative_to(root.parent))
        if unit not in LAYERS:
            unknown.append(shown)
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, imported in imported_units(tree, path, root):
            if imported == unit:
                continue
            if imported not in LAYERS or LAYERS[imported] > LAYERS[unit]:
                violations.append(Violation(shown, line, unit, imported))
    return unknown, violations


def test_every_module_has_a_layer() -> None:
    unknown, _ = scan(PACKAGE)
    assert not unknown, "place these modules in LAYERS (tests/test_layers.py): " + ", ".join(unknown)


def test_imports_point_down() -> None:
    _, violations = scan(PACKAGE)
    assert not violations, "imports that point up a layer:\n" + "\n".join(map(str, violations))


# -- the scanner itself, on a small package made for the purpose ------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "saleflow"
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    "files",
    [
        {"model.py": "from .errors import Span\n", "errors.py": ""},
        {"cli.py": "from saleflow.engine import Engine\n", "engine.py": ""},
        {"store/tables.py": "from ..records import Lead\nfrom .schema import X\n", "records.py": ""},
        {"engine.py": "from . import store\n", "store/__init__.py": ""},
        {"__init__.py": "from .cli import main\n", "cli.py": ""},
        {"migrations/versions/0001.py": "from ...store import schema\n", "store/schema.py": ""},
    ],
)
def test_scanner_accepts_downward_imports(tmp_path: Path, files: dict[str, str]) -> None:
    assert scan(_package(tmp_path, files)) == ([], [])


@pytest.mark.parametrize(
    ("files", "module", "imported"),
    [
        ({"model.py": "from .parse import parse_flow\n", "parse.py": ""}, "model", "parse"),
        ({"engine.py": "def f():\n    import saleflow.cli\n", "cli.py": ""}, "engine", "cli"),
        ({"store/tables.py": "from ..engine import Engine\n", "engine.py": ""}, "store", "engine"),
        ({"guards.py": "from . import compile\n", "compile.py": ""}, "guards", "compile"),
        ({"cli.py": "from saleflow import Engine\n", "__init__.py": ""}, "cli", "__init__"),
        ({"check.py": "from .nowhere import x\n"}, "check", "nowhere"),
    ],
)
def test_scanner_finds_upward_imports(
    tmp_path: Path, files: dict[str, str], module: str, imported: str
) -> None:
    _, violations = scan(_package(tmp_path, files))
    assert [(v.module, v.imported) for v in violations] == [(module, imported)]


def test_scanner_names_modules_without_a_layer(tmp_path: Path) -> None:
    unknown, _ = scan(_package(tmp_path, {"utils.py": "", "helpers/x.py": ""}))
    assert unknown == ["saleflow/helpers/x.py", "saleflow/utils.py"]
