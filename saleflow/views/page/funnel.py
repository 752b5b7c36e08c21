"""The report page's funnel: one bar per main-line stage.

Layer 5.  An inline SVG, each bar centred and as long as the lead-cycles that
entered its stage, labelled with the entries and the share that advanced.
Also drawn twice, side by side, on `simulate`'s what-if page.
"""

from __future__ import annotations

from math import ceil

from ..report import Report, StageFigures, percent
from .markup import esc, figures_attrs
from .metrics import text_width

_BAR = "#3b82c4"


def funnel_label(stage: StageFigures) -> str:
    """The text beside a funnel bar."""
    return f"{stage.entered:,} entered · {percent(stage.conversion)} advanced"


def funnel(report: Report) -> str:
    """The funnel as an SVG, or a note when the flow has no main line."""
    stages = [s for s in report.stages if s.main_line]
    if not stages:
        return '<p class="note">This flow has no main line.</p>'
    row, bar_w, text_w = 34, 560, 260
    name_w = max(170, ceil(max(text_width(s.stage, 13) for s in stages)) + 20)
    width, height = name_w + bar_w + text_w, row * len(stages) + 10
    most = max((s.entered for s in stages), default=0) or 1
    out = [
        f'<svg class="funnel" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="Funnel: lead-cycles entering each main-line stage">'
    ]
    for index, s in enumerate(stages):
        y = 5 + index * row
        w = 0.0 if s.entered == 0 else max(2.0, bar_w * s.entered / most)
        x = name_w + (bar_w - w) / 2
        colour = "#9aa5b1" if s.entered == 0 else _BAR
        out.append(f'<g class="bar" {figures_attrs(s)}>')
        out.append(f"<title>{esc(s.stage)}: {esc(funnel_label(s))}</title>")
        out.append(
            f'<text class="stage-name" x="{name_w - 10}" y="{y + row / 2 + 5}" text-anchor="end" '
            f'font-size="13" fill="#1f2933">{esc(s.stage)}</text>'
        )
        out.append(
            f'<rect {figures_attrs(s)} x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row - 8}" rx="3" '
            f'fill="{colour}"/>'
        )
        out.append(
            f'<text class="label" {figures_attrs(s)} x="{name_w + bar_w + 10}" y="{y + row / 2 + 5}" '
            f'font-size="13" fill="#1f2933">{esc(funnel_label(s))}</text>'
        )
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
