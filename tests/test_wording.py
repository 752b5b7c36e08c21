"""wording.py: the one `plural` and `decimal_text` the CLI, the views and the
runtime's messages share.  Each replaced a copy that wrote the same thing
out; these check that every old caller still reads the same."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from saleflow.wording import decimal_text, plural

counts = st.integers(min_value=-(10**30), max_value=10**30)
words = st.text(min_size=1, max_size=20)


def test_plural_examples() -> None:
    assert plural(1, "lead") == "1 lead"
    assert plural(0, "lead") == "0 leads"
    assert plural(2, "entry", "entries") == "2 entries"
    assert plural(1, "breach", "breaches") == "1 breach"
    assert plural(1234, "lead-cycle", grouped=True) == "1,234 lead-cycles"
    assert plural(1234, "lead") == "1234 leads"


@given(counts, words)
def test_plural_reads_as_the_copies_it_replaced(count: int, word: str) -> None:
    # cli's and diagram's _plural, and the page's (thousands grouped)
    assert plural(count, word) == (f"{count} {word}" if count == 1 else f"{count} {word}s")
    assert plural(count, word, grouped=True) == (f"{count:,} {word}" if count == 1 else f"{count:,} {word}s")
    # anchor's _count(number, word, words)
    assert plural(count, word, word + "es") == f"{count} {word if count == 1 else word + 'es'}"
    # the page's "N breach"/"N breaches"
    assert plural(count, "breach", "breaches", grouped=True) == f"{count:,} breach" + (
        "" if count == 1 else "es"
    )


def test_decimal_text_examples() -> None:
    assert decimal_text(1.5, 2) == "1.5"
    assert decimal_text(2.0, 2) == "2"
    assert decimal_text(0.004, 2) == "0"
    assert decimal_text(-0.25, 2) == "-0.25"
    assert decimal_text(1234.5, 1, grouped=True) == "1,234.5"
    assert decimal_text(10.0, 1) == "10"


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e18, max_value=1e18), st.integers(1, 6))
def test_decimal_text_is_the_trimmed_rounding(value: float, digits: int) -> None:
    # report's days() and the CLI's _days: round, drop trailing zeros and a bare point
    assert decimal_text(value, digits) == f"{value:.{digits}f}".rstrip("0").rstrip(".")
    assert decimal_text(value, digits, grouped=True) == f"{value:,.{digits}f}".rstrip("0").rstrip(".")
    text = decimal_text(value, digits)
    assert not text.endswith(".") and ("." not in text or not text.endswith("0"))
    assert math.isclose(float(text), round(value, digits), abs_tol=10**-digits)
