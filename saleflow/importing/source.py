"""Reading the CSV file: bounded rows of cells, read again for the second pass."""

from __future__ import annotations

import codecs
import csv
import os
import stat
from collections.abc import Generator, Iterator
from functools import partial
from typing import IO

from ..csvcell import unescape_cell
from ..errors import BadInput
from ..limits import MAX_CSV_ROW_BYTES

# --------------------------------------------------------------------------
# Reading the file
# --------------------------------------------------------------------------


class Source:
    """The CSV file as (line number, cells), counting the bytes read.  Every
    way the file itself is unusable is one `BadInput` sentence.

    Reads are bounded: a row (its line, or its lines when a quoted cell
    holds line breaks) longer than `limits.MAX_CSV_ROW_BYTES` is refused
    before more of it is read.  Cells are read through `unescape_cell`, so a
    file saleflow wrote (the rejects of ``--skip-bad``) reads back as the
    values it was given.  The file must be a regular file: it is read twice,
    and `unchanged` tells whether it is still the file the first pass read."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.read = 0
        self._row_bytes = 0  # of the row being read
        self._row_line = 1  # where it starts
        self._quoted = False  # a "'" in the row's lines: cells to unescape
        try:
            found = os.stat(path)
        except FileNotFoundError:
            raise BadInput(f"{path} does not exist") from None
        except OSError as err:
            raise BadInput(f"cannot read {path}: {err.strerror or err}") from None
        if stat.S_ISDIR(found.st_mode):
            raise BadInput(f"{path} is a folder, not a CSV file")
        if not stat.S_ISREG(found.st_mode):
            raise BadInput(
                f"{path} is not a regular file (a device or a pipe); an import reads its file twice, "
                "so save the data to a file first"
            )
        self.identity = _identity(found)

    def unchanged(self) -> bool:
        """Whether the file is as it was when the import began (same file,
        size and modification time)."""
        try:
            return _identity(os.stat(self.path)) == self.identity
        except OSError:
            return False

    def _open(self) -> IO[bytes]:
        try:
            return open(self.path, "rb")  # closed by `rows`
        except OSError as err:
            raise BadInput(f"cannot read {self.path}: {err.strerror or err}") from None

    def _lines(self, handle: IO[bytes]) -> Iterator[str]:
        limit = MAX_CSV_ROW_BYTES
        lines = iter(partial(handle.readline, limit + 1), b"")
        for number, raw in enumerate(lines, start=1):
            size = len(raw)
            self.read += size
            self._row_bytes += size
            if self._row_bytes > limit:
                where = f"line {self._row_line}" + (
                    f" (a row running on to line {number})" if number > self._row_line else ""
                )
                raise BadInput(
                    f"{self.path} {where} is longer than {limit // 1024:,} KiB, the most saleflow reads "
                    "as one row (is it a CSV file?)"
                )
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if b"'" in raw:
                self._quoted = True
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadInput(
                    f"{self.path} is not UTF-8 text: line {number} has the byte 0x{raw[err.start]:02x} "
                    "(save the file as UTF-8)"
                ) from None

    def rows(self) -> Generator[tuple[int, list[str]], None, None]:
        """(line where the row starts, cells), header first; blank lines skipped."""
        self.read = 0
        self._row_bytes = 0
        self._row_line = 1
        with self._open() as handle:
            reader = csv.reader(self._lines(handle), strict=True)
            previous = 0
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise BadInput(f"{self.path} line {reader.line_num} is not valid CSV: {err}") from None
                line, previous = previous + 1, reader.line_num
                self._row_bytes = 0
                self._row_line = previous + 1
                if self._quoted:
                    cells = [unescape_cell(cell) for cell in cells]
                    self._quoted = False
                if cells:
                    yield line, cells


def _identity(found: os.stat_result) -> tuple[int, ...]:
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)
