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
    "collecting": 0,
    "wording": 0,
    "records": 1,
    "journal": 1,
    "model": 1,
    "language": 2,
    "check": 2,
    "guards": 2,
    "coerce": 2,
    "compile": 3,
    "due": 3,
    "store": 3,
    "migrations": 3,
    "runtime": 4,
    "importing": 4,
    "views": 5,
    "webhooks": 5,
    "cli": 6,
    "service": 6,
    "__init__": 7,
    "__main__": 7,
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
        {"cli/app.py": "from saleflow.runtime.engine import Engine\n", "runtime/engine.py": ""},
        {"store/tables.py": "from ..records import Lead\nfrom .schema import X\n", "records.py": ""},
        {"runtime/engine.py": "from .. import store\n", "store/__init__.py": ""},
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
        ({"runtime/engine.py": "def f():\n    import saleflow.cli\n", "cli/app.py": ""}, "runtime", "cli"),
        (
            {"store/tables.py": "from ..runtime.engine import Engine\n", "runtime/engine.py": ""},
            "store",
            "runtime",
        ),
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


# -- cycles: two modules that import each other at run time ------------------
#
# Layers allow imports within a layer, so they cannot see a cycle (engine ⇄
# importer once was one, through a lazy import).  Here every import that
# runs counts, at module granularity, function-level ones included; imports
# under `if TYPE_CHECKING:` never run and are left out.


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for inner in node.body:
                    lines.update(n.lineno for n in ast.walk(inner) if hasattr(n, "lineno"))
    return lines


def _module_of(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(root: Path, dotted: str) -> bool:
    base = root.joinpath(*dotted.split(".")[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def module_graph(root: Path) -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports at run time."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        me = _module_of(path, root)
        package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skipped = _type_checking_lines(tree)
        edges = graph.setdefault(me, set())
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        [*package[: len(package) - (node.level - 1)], *([node.module] if node.module else [])]
                    )
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if _exists(root, sub) else base)
            for target in targets:
                while target.count(".") and not _exists(root, target):
                    target = target.rsplit(".", 1)[0]
                if target.split(".")[0] == root.name and target != me and _exists(root, target):
                    edges.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    found = cycles(module_graph(PACKAGE))
    assert not found, "modules that import each other at run time: " + "; ".join(" ⇄ ".join(c) for c in found)


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        (
            {
                "engine.py": "def f():\n    from .importer import run\n",
                "importer/run.py": "from ..engine import x\n",
            },
            ["saleflow.engine", "saleflow.importer.run"],
        ),
        (
            {"store/sql.py": "from .bulk import B\n", "store/bulk.py": "from . import sql\n"},
            ["saleflow.store.bulk", "saleflow.store.sql"],
        ),
    ],
)
def test_the_cycle_finder_finds_cycles(tmp_path: Path, files: dict[str, str], cycle: list[str]) -> None:
    assert cycles(module_graph(_package(tmp_path, files))) == [cycle]


def test_type_checking_imports_make_no_cycle(tmp_path: Path) -> None:
    files = {
        "store/sql.py": "def buffered():\n    from .bulk import B\n",
        "store/bulk.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sql import S\n",
    }
    assert cycles(module_graph(_package(tmp_path, files))) == []


def shadowing(root: Path) -> list[str]:
    """Modules and packages named like a top-level module of the standard
    library (`views/html.py` was one): run as a script or put on the path,
    they hide the real one, and a reader must look twice at every import."""
    import sys

    found = []
    for path in sorted(root.rglob("*.py")):
        name = path.parent.name if path.stem == "__init__" else path.stem
        if name in sys.stdlib_module_names:
            found.append(str(path.relative_to(root.parent)))
    return found


def test_no_module_shadows_the_standard_library(tmp_path: Path) -> None:
    assert shadowing(PACKAGE) == []
    planted = _package(tmp_path, {"views/html.py": "", "views/page/__init__.py": "", "token/__init__.py": ""})
    assert shadowing(planted) == [f"{planted.name}/token/__init__.py", f"{planted.name}/views/html.py"]


# -- size: a module per job ------------------------------------------------


def test_a_module_over_500_lines_says_why() -> None:
    """Issue 10: no module is over about 500 lines without the reason in its
    docstring (a sentence saying "over 500 lines" and why)."""
    silent = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > 500:
            docstring = ast.get_docstring(ast.parse(text)) or ""
            if "over 500 lines" not in docstring.lower():
                silent.append(f"{path.relative_to(PACKAGE.parent)} ({text.count(chr(10))} lines)")
    assert not silent, "split these by job, or say in the docstring why not: " + ", ".join(silent)
