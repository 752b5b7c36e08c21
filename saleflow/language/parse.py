"""Flow text → `model.Flow`: the entry points of the language package.

`grammar.py` loads the grammar and caches the parser, `build.py` turns
Lark's tree into the model, `syntax.py` turns Lark's exceptions into
diagnostics.  This module reads flow files and strings and ties the three
together.

Parsing judges only syntax.  Names, types and structure are the `check`
package's job, so every node keeps its `Span` for the checker to point at.
Lark's exceptions never leave this package: they become `Diagnostic`s inside
a `FlowInvalid`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken

from .. import collecting
from ..errors import BadInput, Diagnostic, FlowInvalid, Span
from ..limits import MAX_FLOW_BYTES
from ..model import flow as m
from .build import Builder
from .files import grammar_path
from .grammar import parser
from .syntax import nul_character, syntax_diagnostic, too_deep

__all__ = ["grammar_path", "load_flow", "parse_expr", "parse_flow", "parser", "read_source"]


def _parse(text: str, path: str, start: str) -> tuple[Any, list[Diagnostic]]:
    nul = nul_character(text, path)
    if nul is not None:
        raise FlowInvalid(path, [nul], text)
    p = parser()
    # A big flow makes millions of small objects that all live until the
    # parse ends (see collecting.py).
    with collecting.paused():
        try:
            tree = p.parse(text, start=start)
        except (UnexpectedCharacters, UnexpectedToken, UnexpectedEOF) as err:
            raise FlowInvalid(path, [syntax_diagnostic(err, text, path, start)], text) from None
        deep = too_deep(tree, path)
        if deep is not None:
            raise FlowInvalid(path, [deep], text)
        builder = Builder(path)
        return builder.build(tree), builder.problems


def parse_flow(text: str, path: str = "<string>") -> m.Flow:
    """Parse flow text into a `Flow`; raise `FlowInvalid` on syntax errors."""
    # Old Mac files end lines with a lone "\r": count them as lines too.
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        span = Span(path, 1, 1, 1, 1)
        raise FlowInvalid(
            path,
            [Diagnostic("SF003", "error", span, 'the file is empty; a flow file starts with "flow NAME"')],
            text,
        )
    parts, problems = _parse(text, path, "start")
    if problems:
        raise FlowInvalid(path, problems, text)
    return m.Flow(path=path, source=text, **parts)


def parse_expr(text: str, path: str = "<expr>") -> m.Expr:
    """Parse one expression (tests, the REPL, the evaluator's callers)."""
    expr, problems = _parse(text, path, "expr")
    if problems:
        raise FlowInvalid(path, problems, text)
    return expr  # type: ignore[no-any-return]


def read_source(path: str | os.PathLike[str]) -> str:
    """Read a flow file as UTF-8, turning every way it can fail into `BadInput`."""
    where = Path(path)
    if where.is_dir():
        raise BadInput(f"{where} is a folder, not a flow file")
    try:
        with where.open("rb") as file:
            data = file.read(MAX_FLOW_BYTES + 1)  # /dev/zero or a 1 GB file is not read whole
    except FileNotFoundError:
        raise BadInput(f"flow file {where} does not exist") from None
    except OSError as err:
        raise BadInput(f"cannot read flow file {where}: {err.strerror}") from None
    if len(data) > MAX_FLOW_BYTES:
        raise BadInput(f"{where} is larger than {MAX_FLOW_BYTES // 2**20} MiB, the limit for a flow file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise BadInput(f"{where} is not UTF-8 text (invalid byte at line {line})") from None


def load_flow(path: str | os.PathLike[str]) -> m.Flow:
    """Read and parse a flow file."""
    return parse_flow(read_source(path), str(path))
