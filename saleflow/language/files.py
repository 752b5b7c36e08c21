"""Where the language's files are, found without importing Lark: the
grammar file, and the user's private cache folder (the built parser of
grammar.py and the parsed flows of cache.py are kept there).

Layer 2.  `SALEFLOW_CACHE_DIR` names the cache folder (empty: no cache),
else `$XDG_CACHE_HOME/saleflow`, else `~/.cache/saleflow`.  A folder another
user owns or can write to is not used: what is cached there is trusted to
be ours.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import BadInput


def grammar_path() -> Path:
    """The grammar file: packaged copy first (a wheel), else the source tree.
    (Found by path, not `importlib.resources`, whose import every command
    would pay for: the parser reads the grammar as a file anyway.)"""
    here = Path(__file__).resolve().parents[1]  # the saleflow package
    packaged = here / "grammar" / "saleflow.lark"
    if packaged.is_file():
        return packaged
    source_tree = here.parent / "grammar" / "saleflow.lark"
    if source_tree.is_file():
        return source_tree
    raise BadInput("the saleflow grammar file is missing from this installation; reinstall saleflow")


def cache_dir() -> Path | None:
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
    except (OSError, ValueError):  # ValueError: a NUL in the name
        return None
    # Only trust a folder this user owns and nobody else can write to: the
    # cache holds a pickled parser (parse.py) and the models read here.
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    if not os.access(base, os.W_OK | os.X_OK):
        return None
    return base
