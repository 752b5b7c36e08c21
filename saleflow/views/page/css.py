"""The report page's style sheet.

Layer 5.  Inlined in a `<style>` element by the page (`document`), and reused
by the other pages built from the same parts: `simulate --format html` and
the service's live dashboard.  No font is shipped; `metrics` measures text in
the widest face the font stack falls back to.
"""

from __future__ import annotations

CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: #1f2933; background: #f5f7fa; margin: 0; padding: 24px 32px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 16px 0 8px; }
.meta { color: #52606d; margin: 0 0 16px; }
section { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 16px 20px;
          margin: 0 0 20px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 0 0 20px; }
.card { background: #fff; border: 1px solid #e4e7eb; border-radius: 8px; padding: 10px 16px; min-width: 170px; }
.card .value { font-size: 22px; font-weight: 600; }
.card .what { color: #52606d; font-size: 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
th { background: #f0f4f8; font-weight: 600; font-size: 13px; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.side td { color: #616e7c; }
.met { background: #e3f9e5; color: #1f6f2a; font-weight: 600; }
.missed { background: #ffe3e3; color: #a61b1b; font-weight: 600; }
.nodata { background: #f0f4f8; color: #616e7c; }
.late { color: #a61b1b; font-weight: 600; }
.note { color: #616e7c; font-size: 12px; margin: 8px 0 0; }
.meter { display: inline-block; width: 60px; height: 8px; background: #e4e7eb; border-radius: 4px;
         margin-left: 6px; vertical-align: middle; overflow: hidden; }
.meter span { display: block; height: 100%; background: #3b82c4; }
svg { max-width: 100%; height: auto; display: block; }
svg text { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
.legend { display: flex; flex-wrap: wrap; align-items: center; gap: 6px 18px; color: #52606d; font-size: 12px;
          margin: 8px 0 0; }
.legend span { display: inline-flex; align-items: center; white-space: nowrap; }
.legend span.explain { white-space: normal; }
.legend svg.key { display: inline-block; width: 30px; height: 16px; margin-right: 6px; flex: none; }
"""
