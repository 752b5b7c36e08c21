"""The colour of each kind of move: one palette for every picture of a flow.

Layer 5.  The Mermaid and Graphviz text (`diagram`) and the report page's
flow picture (`page.picture`) draw skips, recycles and exits in these
colours, so that the pictures agree with each other and with the page's
legend.  Diagrams leave the main line in their renderer's default colour.
"""

from __future__ import annotations

MOVE_COLOURS: dict[str, str] = {
    "advance": "#4a5568",
    "skip": "#2a7ab0",
    "recycle": "#c0392b",
    "exit": "#b0b0b0",
}
