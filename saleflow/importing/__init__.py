"""`saleflow import`: leads and their history from a CSV file (SPEC §4).

Layer 4, beside `engine.py`.  A CRM export is the usual way leads arrive, so
an import has to take a real file as it is: columns named by people ("Lead
Origin"), placeholders left by forms ("Select"), decimals, Yes/No flags, and
sometimes a history, one row per change of stage, with its dates.

The file is read twice, streaming, every row bounded in size
(`limits.MAX_CSV_ROW_BYTES`): rows are never all held in memory (per lead
the import remembers its id, and with a time column its last time).  The
first pass checks everything (the header, every cell against its field's
type and against what a database can hold: limits.py, stages, times, that
each lead's rows run forward in time) and writes nothing to the database: a
file with bad rows is refused whole, listing them, unless `skip_bad` names a
file to put them in, which is then written and closed before the database is
touched.  The second pass applies the rows in file order, all of them in one
transaction, so a file lands whole or not at all (a conflict retries the
whole pass); it writes chunk by chunk inside it.  Per row, a new lead is
created at the row's time with the row's fields, in the row's stage (its
first audit entry then has kind ``import``) or else in the initial stage; a
stored lead gets the row's fields and is placed in the row's stage (an
ungated move of kind ``import``).  Then the lead progresses as after any
other change.  So the funnel of an imported history is the file's own: a
lead whose first row is a customer never entered the first stage.  On SQL
stores each chunk's writes go through `BufferedTransaction`
(`saleflow.store.bulk`): a few statements per chunk, not per lead, and the
memory of one chunk.

The package, a module a job: `source` reads the file (bounded rows, cells
through `unescape_cell`), `plan` maps columns to fields and turns a cell
into a value within limits.py, `rows` judges rows (stages, times, order),
`run` makes the two passes (the rejects file, the one transaction), and
`results` holds what an import reports.
"""

from __future__ import annotations

from ..coerce import normalise
from .results import DEFAULT_NULLS, SHOWN_BAD_ROWS, BadRow, BadRows, ImportResult, one_line
from .run import import_csv

__all__ = [
    "DEFAULT_NULLS",
    "SHOWN_BAD_ROWS",
    "BadRow",
    "BadRows",
    "ImportResult",
    "import_csv",
    "normalise",
    "one_line",
]
