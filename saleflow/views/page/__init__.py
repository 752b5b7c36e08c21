"""The report as one self-contained HTML page (`report --format html`).

Layer 5, a read-only view of a `Report`, a module per job: `document` (the
page, its cards and tables), `funnel`, `picture` (the flow drawn), `css` (the
style sheet), `metrics` (text widths in the page's font) and `markup`
(escaping, cells).  Named `page`, not `html`, so that nothing shadows the
standard library's `html`.

The other pages built from these parts (`simulate --format html`, the
service's dashboard) import them from here.
"""

from __future__ import annotations

from .css import CSS
from .document import render_html
from .funnel import funnel
from .markup import esc, table, td

__all__ = ["CSS", "esc", "funnel", "render_html", "table", "td"]
