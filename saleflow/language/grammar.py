"""Grammar loading and the parser cache: the one place that builds Lark.

It reads `grammar/saleflow.lark` (found by files.py, as is the cache folder),
builds the LALR parser once per process, and reuses a built parser
across processes through a cache file in a folder the user owns, keyed by the
grammar's hash and Lark's version (building costs ~0.3 s, loading ~20 ms).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import lark
from lark import Lark

from .files import cache_dir, grammar_path

_OPTIONS: dict[str, Any] = {
    "parser": "lalr",
    "lexer": "contextual",
    "propagate_positions": True,
    "start": ["start", "expr"],
    "maybe_placeholders": False,
}


_PARSER: Lark | None = None


def parser() -> Lark:
    """The process-wide parser, loaded from the user's cache when possible."""
    global _PARSER
    if _PARSER is None:
        text = grammar_path().read_text(encoding="utf-8")
        key = hashlib.sha256(f"{lark.__version__}\n{sorted(_OPTIONS.items())}\n{text}".encode()).hexdigest()
        folder = cache_dir()
        cache: str | bool = str(folder / f"parser-{key[:20]}.lark") if folder else False
        # A stale or unreadable cache is rebuilt; Lark would log that loudly.
        logging.getLogger("lark").setLevel(logging.CRITICAL)
        _PARSER = Lark(text, cache=cache, **_OPTIONS)
    return _PARSER
