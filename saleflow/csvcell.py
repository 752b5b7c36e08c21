"""CSV cells that a spreadsheet will not run as formulas.

Layer 0.  A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return is a formula to Excel, LibreOffice and Google Sheets, and a
lead's field or a CRM export is text anyone may have typed.  Every CSV file
saleflow writes goes through `safe_cell`, which neutralises such a cell the
way OWASP recommends ("CSV Injection"): a leading single quote, which the
spreadsheet shows as text.  Plain numbers (``-5``, ``+3.25``) are left as
they are: they are values, not formulas.

`unescape_cell` undoes it, so a file saleflow wrote (the rejected rows of an
import, say) can be imported again and reads the values it was given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# A formula, after any number of quotes; escaped, it has at least one.
_QUOTED_FORMULA = re.compile("'*[=+\\-@\t\r]")
_ESCAPED_FORMULA = re.compile("'+[=+\\-@\t\r]")


def safe_cell(value: Any) -> Any:
    """`value` as a CSV writer should get it: strings that a spreadsheet
    would read as a formula get a leading ``'``; anything else is unchanged.
    (A string that already starts with quotes before such a character gets
    one more, so that `unescape_cell` always gives back what it was given.)"""
    if isinstance(value, str) and _QUOTED_FORMULA.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def safe_row(values: Iterable[Any]) -> list[Any]:
    return [safe_cell(value) for value in values]


def unescape_cell(text: str) -> str:
    """A cell as `safe_cell` was given it: ``'=x`` reads as ``=x``."""
    return text[1:] if _ESCAPED_FORMULA.match(text) else text
