"""The import's two passes: check (and write the rejects), then apply in one transaction."""

from __future__ import annotations

import csv
import errno
import os
import time
from array import array
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import closing, suppress
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, cast

from ..compile import CompiledFlow
from ..csvcell import safe_row
from ..errors import BadInput
from ..journal import JournalEntry
from ..records import Transaction
from ..runtime.batch import chunked, write_behind
from ..runtime.moves import Work
from .plan import check_date_format, make_plan
from .results import (
    DEFAULT_NULLS,
    REASON_COLUMN,
    SHOWN_BAD_ROWS,
    BadRow,
    BadRows,
    ImportResult,
    Progress,
    one_line_errors,
)
from .rows import Checker, Row
from .source import Source

if TYPE_CHECKING:
    from ..runtime.engine import Engine

# --------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _RowCounts:
    """The rows of an import: read, imported, bad (and the bad ones shown)."""

    rows: int = 0
    imported: int = 0
    bad: int = 0
    shown: list[BadRow] = field(default_factory=list)
    # The lines of the bad rows, in file order: the second pass, judging
    # again, must find the same ones.
    bad_lines: array[int] = field(default_factory=lambda: array("q"))
    # The first pass's judgement, chunk by chunk, kept for the second pass
    # while the file is small enough (None: judge again while applying).
    # Each entry: the chunk's raw rows, their verdicts, the bytes they span.
    kept: list[tuple[list[tuple[int, list[str]]], list[Row | BadRow], int]] | None = None

    def bad_row(self, row: BadRow) -> None:
        self.bad += 1
        self.bad_lines.append(row.line)
        if len(self.shown) < SHOWN_BAD_ROWS:
            self.shown.append(row)


class _Entries(list[JournalEntry]):
    """The journal entries of the import's transaction, counted as they come.
    They are kept only when `on_enter` callbacks will want them: a large
    file makes millions."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep
        self.created = self.moves = self.placed = 0

    def append(self, entry: JournalEntry) -> None:
        kind = entry.entry
        if kind == "created":
            self.created += 1
        elif kind == "moved":
            self.moves += 1
        if entry.kind == "import":
            self.placed += 1
        if self.keep:
            super().append(entry)

    def clear(self) -> None:
        self.created = self.moves = self.placed = 0
        super().clear()


@one_line_errors
def import_csv(
    engine: Engine,
    path: str | os.PathLike[str],
    *,
    flow: str,
    id_column: str,
    mapping: Mapping[str, str] | None = None,
    stage_column: str | None = None,
    stage_map: Mapping[str, str] | None = None,
    at_column: str | None = None,
    date_format: str | None = None,
    nulls: Collection[str] = DEFAULT_NULLS,
    skip_bad: str | os.PathLike[str] | None = None,
    chunk: int = 1000,
    progress: Progress | None = None,
) -> ImportResult:
    """Import the CSV file `path` into `flow` (a deployed flow's name).

    `id_column` holds the lead ids; `mapping` maps columns to fields
    (column -> field; an empty field ignores the column), and the other
    columns whose names match a field, as written or normalised, map
    themselves.  `stage_column` places each lead in a stage (an ungated
    ``import`` move): a value names a stage as written or normalised, or
    as `stage_map` says (value -> stage; an empty stage: none).
    `at_column` gives each row's time (ISO 8601, or
    `date_format` for `datetime.strptime`); without it every row happens
    now.  Blank cells and the `nulls` placeholders unset a field.

    All or nothing: the rows are applied in one transaction, so the file
    lands whole or not at all.  A file with bad rows is refused whole
    (`BadRows`) unless `skip_bad` names a CSV file to write them to, with a
    ``reason`` column; that file is written and closed before the database
    is touched.  Raises `BadInput` for an unusable file, `NotFound` for an
    unknown flow or field; in every such case nothing is written.
    `chunk` rows are judged and written at a time (memory stays bounded)."""
    started = time.perf_counter()
    if chunk < 1:
        raise BadInput(f"the chunk size must be at least 1, not {chunk}")
    name = os.fspath(path)
    skip_to = None if skip_bad is None else os.fspath(skip_bad)
    cf = engine.compiled(flow)
    check_date_format(date_format)
    if skip_to is not None and os.path.abspath(skip_to) == os.path.abspath(name):
        raise BadInput(f"--skip-bad must name another file than the one imported ({name})")
    source = Source(name)
    if skip_to is not None and _same_file(skip_to, source):
        raise BadInput(f"--skip-bad must name another file than the one imported ({name})")
    null_set = frozenset((nulls,) if isinstance(nulls, str) else nulls)
    with closing(source.rows()) as rows:
        header = next(rows, None)
        if header is None:
            raise BadInput(f"{name} is empty; an import needs a header line naming the columns, then rows")
        plan = make_plan(
            header[1],
            name,
            cf,
            id_column=id_column,
            mapping=mapping or {},
            stage_column=stage_column,
            at_column=at_column,
            nulls=null_set,
            stage_map=stage_map,
            date_format=date_format,
        )

        def checker() -> Checker:
            return Checker(
                plan,
                name,
                cf,
                engine.store,
                engine.compiled,
                now=engine.now(),
                at_column=at_column,
                date_format=date_format,
            )

        first = checker()
        rejects = None if skip_to is None else _Rejects(skip_to, header[1])
        try:
            found = _first_pass(rows, first, chunk, _Reporter(source, progress), rejects)
            if rejects is not None:
                rejects.close()  # before anything is written to the database
        finally:
            first.close()  # what it remembered per id: its verdicts are all the second pass reads
            if rejects is not None:
                rejects.abandon()
    if found.bad and skip_to is None:
        raise BadRows(name, tuple(found.shown), found.bad)
    entries = _Entries(keep=engine.watching)
    done: list[tuple[_RowCounts, Checker]] = []

    def body(tx: Transaction) -> None:
        # The whole second pass, in the one transaction `engine.run_in_transaction` gives
        # (and retries whole on a conflict): the file is read again from
        # its start each time.
        done.clear()
        tally = _RowCounts()
        if not entries.keep and hasattr(tx, "spilling"):
            # Entries need not stay in memory until the commit (none is
            # handed to `on_enter` callbacks): the store may write or park
            # them as the import goes (`SqlTransaction.spill_journal`).
            cast(Any, tx).spilling = True
        if found.kept is not None:  # judged once: the first pass's verdicts
            spans = iter([size for _, _, size in found.kept])
            reporter = _Reporter(source, progress, lambda: next(spans, 0))
            chunks = iter([(raw, verdicts) for raw, verdicts, _ in found.kept])
            _second_pass(engine, cf, tx, chunks, first, found, reporter, tally, entries)
            _check_unchanged(source)
            done.append((tally, first))
            return
        second = checker()
        try:
            with closing(source.rows()) as again:
                next(again)  # the header
                judged = ((raw, second.check(raw)) for raw in chunked(again, chunk))
                _second_pass(
                    engine, cf, tx, judged, second, found, _Reporter(source, progress), tally, entries
                )
        finally:
            second.close()
        _check_unchanged(source)
        done.append((tally, second))

    engine.run_in_transaction(body, entries)
    tally, judge = done[0]
    return ImportResult(
        path=name,
        flow=cf.name,
        version=cf.version,
        rows=tally.rows,
        imported=tally.imported,
        created=entries.created,
        updated=judge.updated,
        moves=entries.moves,
        placed=entries.placed,
        bad=tally.bad,
        bad_rows=tuple(tally.shown),
        skipped_to=skip_to if tally.bad else None,
        columns={c.name: c.field for c in plan.columns},
        ignored=tuple(plan.ignored),
        seconds=time.perf_counter() - started,
    )


class _Reporter:
    """Reports the bytes a pass has read since the last call."""

    def __init__(
        self, source: Source, progress: Progress | None, replay: Callable[[], int] | None = None
    ) -> None:
        self.source = source
        self.progress = progress
        self.replay = replay  # the bytes of the next chunk, when not reading the file
        self.done = 0

    def __call__(self) -> None:
        read = self.done + self.replay() if self.replay is not None else self.source.read
        if self.progress is not None and read > self.done:
            self.progress(read - self.done)
        self.done = read


class _Rejects:
    """The ``--skip-bad`` file: the bad rows as they were read, with a reason
    column, through `safe_row` (so a spreadsheet runs no formula, and an
    import reads the cells back as they were).  Opened at the first bad row;
    every failure to write it is one `BadInput` sentence."""

    def __init__(self, path: str, header: list[str]) -> None:
        self.path = path
        self.header = header
        self._out: IO[str] | None = None
        self._writer: Any = None

    def _fail(self, err: OSError) -> BadInput:
        return BadInput(f"cannot write {self.path}: {err.strerror or err}; nothing was imported")

    def write(self, cells: list[str], row: BadRow) -> None:
        try:
            if self._writer is None:
                self._out = open(self.path, "w", encoding="utf-8", newline="")  # noqa: SIM115 (closed by close/abandon)
                self._writer = csv.writer(self._out)
                reason = REASON_COLUMN if REASON_COLUMN not in self.header else f"import_{REASON_COLUMN}"
                self._writer.writerow(safe_row([*self.header, reason]))
            self._writer.writerow(safe_row([*cells, str(row)]))
        except OSError as err:
            raise self._fail(err) from None

    def close(self) -> None:
        """Flush and close the file, or say why it could not be written."""
        out, self._out = self._out, None
        if out is None:
            return
        try:
            out.flush()
            os.fsync(out.fileno())
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # a device that cannot sync
                with suppress(OSError):
                    out.close()
                raise self._fail(err) from None
        try:
            out.close()
        except OSError as err:
            raise self._fail(err) from None

    def abandon(self) -> None:
        """Close the file after a failure (nothing more to report)."""
        out, self._out = self._out, None
        if out is not None:
            with suppress(OSError):
                out.close()


KEPT_ROWS = 50_000  # rows whose verdicts the first pass keeps for the second


def _first_pass(
    rows: Iterator[tuple[int, list[str]]],
    checker: Checker,
    chunk: int,
    report: _Reporter,
    rejects: _Rejects | None,
) -> _RowCounts:
    """Judge every row; write nothing to the database, and the bad rows to
    `rejects` if given.  Up to `KEPT_ROWS` rows, the verdicts are kept for
    the second pass."""
    found = _RowCounts(kept=[])
    for raw_rows in chunked(rows, chunk):
        verdicts = checker.check(raw_rows)
        cells_of: dict[int, list[str]] | None = None
        for judged in verdicts:
            found.rows += 1
            if isinstance(judged, BadRow):
                found.bad_row(judged)
                if rejects is not None:
                    cells_of = cells_of or dict(raw_rows)
                    rejects.write(cells_of[judged.line], judged)
        before = report.done
        report()
        if found.kept is not None:
            found.kept.append((raw_rows, verdicts, report.done - before))
            if found.rows > KEPT_ROWS:
                found.kept = None
    checker.finish()
    return found


def _second_pass(
    engine: Engine,
    cf: CompiledFlow,
    tx: Transaction,
    chunks: Iterator[tuple[list[tuple[int, list[str]]], list[Row | BadRow]]],
    checker: Checker,
    found: _RowCounts,
    report: _Reporter,
    tally: _RowCounts,
    entries: list[JournalEntry],
) -> None:
    """Apply the good rows in `tx`, chunk by chunk.  The bad rows must be
    those the first pass found (and wrote to the rejects file): otherwise
    the file or the database changed in between, and nothing is imported."""
    expected = iter(found.bad_lines)
    # The file's name goes into each placed lead's history: as text a
    # database stores (a name that is not UTF-8 gets U+FFFD for its bytes).
    label = os.fsencode(os.path.basename(checker.path)).decode("utf-8", "replace")
    for _raw_rows, verdicts in chunks:
        good: list[Row] = []
        for judged in verdicts:
            tally.rows += 1
            if isinstance(judged, Row):
                good.append(judged)
                continue
            if next(expected, None) != judged.line:
                raise _changed(checker.path, judged)
            tally.bad_row(judged)
        if good:
            _apply(engine, cf, tx, good, entries, label, timed=checker.at_column is not None)
            tally.imported += len(good)
        report()
    missing = next(expected, None)
    if missing is not None:
        raise _changed(checker.path, f"line {missing} is no longer a bad row")


def _same_file(path: str, source: Source) -> bool:
    """Whether `path` is the file `source` reads (by another name, a link)."""
    try:
        found = os.stat(path)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == source.identity[:2]


def _check_unchanged(source: Source) -> None:
    if not source.unchanged():
        raise BadInput(f"{source.path} changed during the import; nothing was imported (run it again)")


def _changed(path: str, what: object) -> BadInput:
    return BadInput(
        f"{path} or the database changed during the import ({what}); nothing was imported (run it again)"
    )


def _apply(
    engine: Engine,
    cf: CompiledFlow,
    tx: Transaction,
    rows: list[Row],
    entries: list[JournalEntry],
    label: str,
    *,
    timed: bool,
) -> None:
    """One chunk of good rows, in the import's transaction `tx`: the chunk's
    leads are read at once and its writes held until its end (write-behind
    keeps memory bounded by the chunk, not the file).  Without a time
    column the rows happen now, and now is taken here, once the chunk's
    leads are held: a lead another process changed since the checking pass
    began is then not written before that change (issue 8: time under lock)."""
    with write_behind(tx, (row.lead_id for row in rows)) as work_tx:
        now = engine.now()
        work = Work(work_tx, engine.compiled, now, engine.actor, entries)
        for row in rows:
            work.at = row.at if timed else now
            lead = work_tx.lock_lead(row.lead_id)
            if row.stage is None:
                if lead is None:
                    work.create(row.lead_id, cf, row.values)
                else:
                    work.set_fields(lead, row.values)
                continue
            reason = f"{label} line {row.line}"
            if lead is None:  # created where the row says it stands
                work.create(row.lead_id, cf, row.values, stage=row.stage, reason=reason)
            else:
                lead = work.set_fields(lead, row.values, progress=False)
                work.place(lead, row.stage, "import", reason)
