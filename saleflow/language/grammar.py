"""Grammar loading and the parser cache: the one place that builds Lark.

It finds `grammar/saleflow.lark` (the installed package's copy or the source
tree's), builds the LALR parser once per process, and reuses a built parser
across processes through a cache file in a folder the user owns, keyed by the
grammar's hash and Lark's version (building costs ~0.3 s, loading ~20 ms).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from importlib import resources
from pathlib import Path
from typing import Any

import lark
from lark import Lark

from ..errors import BadInput

_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "propagate_positions": True,
    "start": ["start", "expr"],
    "maybe_placeholders": False,
}


def grammar_path() -> Path:
    """The grammar file: packaged copy first (a wheel), else the source tree."""
    packaged = resources.files("saleflow").joinpath("grammar", "saleflow.lark")
    if packaged.is_file():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / "grammar" / "saleflow.lark"
    if source_tree.is_file():
        return source_tree
    raise BadInput("the saleflow grammar file is missing from this installation; reinstall saleflow")


def _cache_dir() -> Path | None:
    """A private cache folder, or None when no safe one can be had."""
    explicit = os.environ.get("SALEFLOW_CACHE_DIR")
    if explicit == "":
        return None
    if explicit:
        base = Path(explicit)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "saleflow"
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = base.stat()
    except OSError:
        return None
    # Only trust a folder this user owns and nobody else can write to:
    # the cache holds a pickled parser.
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    if not os.access(base, os.W_OK | os.X_OK):
        return None
    return base


_PARSER: Lark | None = None


def parser() -> Lark:
    """The process-wide parser, loaded from the user's cache when possible."""
    global _PARSER
    if _PARSER is None:
        text = grammar_path().read_text(encoding="utf-8")
        key = hashlib.sha256(f"{lark.__version__}\n{sorted(_OPTIONS.items())}\n{text}".encode()).hexdigest()
        folder = _cache_dir()
        cache: str | bool = str(folder / f"parser-{key[:20]}.lark") if folder else False
        # A stale or unreadable cache is rebuilt; Lark would log that loudly.
        logging.getLogger("lark").setLevel(logging.CRITICAL)
        _PARSER = Lark(text, cache=cache, **_OPTIONS)
    return _PARSER
