"""Where the grammar file is: the copy packaged as `saleflow.grammar` (a
wheel, an sdist install), else `grammar/` at the top of the source tree.

Layer 2.  Kept apart from parse.py so that the parse cache can fingerprint
the grammar without importing Lark.
"""

from __future__ import annotations

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
