"""HTML building blocks of the report page: escaping, table cells, meters.

Layer 5.  Every text that goes into the page goes through `esc`
(`html.escape`); `figures_attrs` writes the ``data-*`` attributes that let
tests and scripts read a stage's figures from the DOM.  Shared by the page's
sections (`document`, `funnel`, `picture`) and by `simulate`'s what-if page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from ..report import StageFigures, percent


def esc(value: object) -> str:
    """`value` as text, escaped for an element or a quoted attribute."""
    return escape(str(value), quote=True)


def _num(value: float | None) -> str:
    """A figure for a ``data-*`` attribute: empty when there is none."""
    return "" if value is None else repr(value)


def figures_attrs(stage: StageFigures) -> str:
    """A stage's ``data-stage``, ``data-entered`` and ``data-conversion``."""
    return (
        f'data-stage="{esc(stage.stage)}" data-entered="{stage.entered}" '
        f'data-conversion="{_num(stage.conversion)}"'
    )


def table(headers: Sequence[tuple[str, bool]], rows: Iterable[str], css: str = "") -> str:
    """A table of `rows` (markup), under `headers` (text, numeric)."""
    head = "".join(f"<th{' class=n' if numeric else ''}>{esc(h)}</th>" for h, numeric in headers)
    body = "\n".join(rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>'


def td(value: object, numeric: bool = True, css: str = "") -> str:
    """A cell; numeric cells are set right-aligned."""
    classes = " ".join(c for c in ("n" if numeric else "", css) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{esc(value)}</td>"


def meter(value: float | None) -> str:
    """A cell with a share as a percentage and a small bar."""
    if value is None:
        return '<td class="n">-</td>'
    width = max(0.0, min(1.0, value)) * 100
    return f'<td class="n">{esc(percent(value))}<span class="meter"><span style="width:{width:.1f}%"></span></span></td>'
