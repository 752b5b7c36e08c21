"""The width of text in the report page's font.

Layer 5.  The page ships no font and draws its SVG boxes to fit their text,
so text is measured here with the widths of a wide common face
(`text_width`): a box sized by it holds its text in narrower faces too.
"""

from __future__ import annotations

# Advance widths of printable ASCII (" " to "~"), in hundredths of an em, in
# DejaVu Sans Book and Bold: the face `system-ui` falls back to on most
# Linux desktops and one of the widest sans-serif faces, so that a box sized
# by these widths holds its text in the narrower faces of other systems too.
# A character outside the table counts as a full em.
_REGULAR_WIDTHS = (
    "32 40 46 84 64 95 78 27 39 39 50 84 32 36 32 34 64 64 64 64 64 64 64 64 64 64 34 34 84 84 84 53 "
    "100 68 69 70 77 63 58 77 75 29 29 66 56 86 75 79 60 79 69 63 61 73 68 99 69 61 69 39 34 39 84 50 "
    "50 61 63 55 63 62 35 63 63 28 28 58 28 97 63 61 63 63 41 52 39 63 59 82 59 59 52 64 34 64 84"
)
_BOLD_WIDTHS = (
    "35 46 52 84 70 100 87 31 46 46 52 84 38 42 38 37 70 70 70 70 70 70 70 70 70 70 40 40 84 84 84 58 "
    "100 77 76 73 83 68 68 82 84 37 37 77 64 100 84 85 73 85 77 72 68 81 77 110 77 72 73 46 37 46 84 50 "
    "50 67 72 59 72 68 44 72 71 34 34 67 34 104 71 69 72 72 49 60 48 71 65 92 65 65 58 71 37 71 84"
)
_WIDTHS = {
    bold: {chr(32 + i): int(w) for i, w in enumerate(table.split())} | {"·": 38, "→": 84}
    for bold, table in ((False, _REGULAR_WIDTHS), (True, _BOLD_WIDTHS))
}


def text_width(text: str, size: float, bold: bool = False) -> float:
    """A generous estimate of the width in pixels of `text` set at `size`
    pixels in the page's font (`bold`: weight 600)."""
    widths = _WIDTHS[bold]
    return sum(widths.get(char, 100) for char in text) * size / 100 * 1.04
