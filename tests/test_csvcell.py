"""`saleflow.csvcell`: no cell a spreadsheet would run, and nothing lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from saleflow.csvcell import FORMULA_STARTS, safe_cell, unescape_cell

TRICKY = st.text(alphabet="'=+-@\t\r0123456789.eE ax")


@given(st.one_of(TRICKY, st.text()))
def test_a_safe_cell_is_never_a_formula_and_reads_back(value: str) -> None:
    safe = safe_cell(value)
    if safe.startswith(FORMULA_STARTS):
        assert safe == value  # only plain numbers keep their sign
        float(safe)
    assert unescape_cell(safe) == value


def test_examples() -> None:
    assert safe_cell('=HYPERLINK("http://x")') == '\'=HYPERLINK("http://x")'
    assert safe_cell("@SUM(A1)") == "'@SUM(A1)"
    assert safe_cell("\tcmd") == "'\tcmd"
    assert safe_cell("-5") == "-5" and safe_cell("+3.25") == "+3.25"
    assert safe_cell("-x") == "'-x"
    assert safe_cell(-5) == -5 and safe_cell(None) is None
    assert safe_cell("Acme") == "Acme"
