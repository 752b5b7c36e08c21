"""Counts and numbers as they read in English, for people.

Layer 0: imports nothing from saleflow.  A count with its noun in the right
number (`1 lead`, `2 leads`, `3 breaches`) and a decimal with no trailing
zeros (`1.5`, `2`): the CLI, the views and the runtime's messages all say
them the same way through these two functions.
"""

from __future__ import annotations


def plural(count: int, word: str, words: str | None = None, *, grouped: bool = False) -> str:
    """`count` and `word`, or `words` (default: `word` + "s") unless it is
    exactly one; `grouped` separates the thousands (`1,234 leads`)."""
    number = f"{count:,}" if grouped else f"{count}"
    return f"{number} {word}" if count == 1 else f"{number} {words or word + 's'}"


def decimal_text(value: float, digits: int, *, grouped: bool = False) -> str:
    """`value` rounded to `digits` (at least 1) decimals, trailing zeros and
    a bare point dropped: 1.50 → `1.5`, 2.00 → `2`; `grouped` separates the
    thousands."""
    text = f"{value:,.{digits}f}" if grouped else f"{value:.{digits}f}"
    return text.rstrip("0").rstrip(".")


def counted(count: int, word: str, words: str | None = None) -> str:
    """`plural` with the thousands separated: `1,234 leads`."""
    return plural(count, word, words, grouped=True)
