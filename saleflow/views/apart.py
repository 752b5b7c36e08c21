"""A flow's recorded journal and report, read by another process while this
one replays.

Layer 5.  `saleflow simulate` reads the recorded journal (SQL, and Python's
decoding of a time and a JSON object per entry), replays it (all Python),
and reports on what was recorded (SQL and Python again).  In one process
they share one interpreter lock: run side by side in threads, each stalls
the other, and at 100,000 leads a report thread made the whole slower than
the two one after the other.  A second process has its own interpreter:

1. it reads the journal entries a replay is fed, decodes and checks them as
   the store does (`iter_recorded`), and sends them on in frames of a few
   thousand, which this process takes apart in C (`marshal`: the entries
   are strings, numbers and JSON values) far faster than it decodes the
   rows itself;
2. it builds the recorded report meanwhile, in a thread (sending the
   journal waits on the pipe, at the pace of the replay), and sends it
   after the journal (a pickle).

`Apart.start` starts ``python -m saleflow.views.apart`` on the same
database (a SQLite file or a server: a URL another process can open).
`entries()` yields the journal as `iter_recorded` would; it raises `Lost`
when the stream breaks off (the other process failed: the database refused
it, an entry did not decode, it was killed).  `report()` is the report, or
None when the other process gave none.  Either way the caller does the
work itself then, so an error reaches the user exactly as it would have
without this module.

The request is a pickle in a temporary file given as the child's stdin;
the frames and the report come back on its stdout.  Both ends are this
package, started by this process, and nothing else writes to those pipes.
The report's flow definition is not sent back: the caller's own `Flow` is
put in its place.
"""

from __future__ import annotations

import marshal
import os
import pickle
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from ..model.flow import Flow
from .report import Period, Report

if TYPE_CHECKING:
    from ..runtime.engine import Engine

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_FRAME = struct.Struct("<I")  # the length of the frame that follows; 0 ends the journal
_ENTRIES_PER_FRAME = 4000

Row = tuple[str, str, "str | None", str, datetime, "str | None", dict[str, Any]]


class Lost(Exception):
    """The other process's stream broke off."""


@dataclass(frozen=True)
class _Request:
    url: str
    flow: str
    version: int
    now: datetime
    period: Period
    entries: tuple[str, ...]  # `iter_recorded`'s entry kinds and moves
    moves: tuple[str, ...]


class Apart:
    """The other process (`start`): the journal, then the report."""

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self._process = process
        self._read = False  # the journal was read to its end

    @classmethod
    def start(
        cls,
        url: str,
        flow: str,
        version: int,
        now: datetime,
        period: Period,
        entries: tuple[str, ...],
        moves: tuple[str, ...],
    ) -> Apart:
        """Start reading `flow`'s recorded entries of the kinds `entries`
        (and `moves`, as `iter_recorded` takes them) up to `now`, then
        building its report (deployed `version`, over `period`) from the
        database at `url`, in another process."""
        environment = dict(os.environ)
        # The child imports this same package, wherever it was imported from.
        path = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
        try:
            # The request waits in a file, read when the child is ready.
            with tempfile.TemporaryFile() as request:
                pickle.dump(_Request(url, flow, version, now, period, entries, moves), request)
                request.seek(0)
                process = subprocess.Popen(
                    [sys.executable, "-m", "saleflow.views.apart"],
                    stdin=request,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    env=environment,
                )
        except OSError:
            return cls(None)
        return cls(process)

    def entries(self) -> Iterator[Row]:
        """The recorded entries, in the order `iter_recorded` gives them."""
        process = self._process
        if process is None or process.stdout is None:
            raise Lost("no other process")
        source = process.stdout
        parse = datetime.fromisoformat
        while True:
            frame = _frame(source)
            if not frame:
                self._read = True
                return
            try:
                rows = marshal.loads(frame)
            except (EOFError, ValueError, TypeError) as err:
                raise Lost("a frame did not decode") from err
            for lead_id, entry, kind, stage, at, reason, data in rows:
                yield lead_id, entry, kind, stage, parse(at), reason, data

    def report(self, definition: Flow) -> Report | None:
        """The report, waiting for it, with `definition` as its flow (the
        caller's own); None when the other process gave none.  Reading the
        journal to its end comes first."""
        process, self._process = self._process, None
        if process is None or process.stdout is None or not self._read:
            if process is not None:
                _stop(process)
            return None
        try:
            answer = _frame(process.stdout)
            process.communicate()
        except Lost:
            _stop(process)
            return None
        except BaseException:
            _stop(process)
            raise
        if process.returncode != 0:
            return None
        try:
            report = pickle.loads(answer)  # our own child's answer, on a private pipe
        except Exception:  # a truncated answer: the caller builds it
            return None
        return replace(report, definition=definition) if isinstance(report, Report) else None

    def cancel(self) -> None:
        """Stop the other process if it is still working (nothing waits for it)."""
        process, self._process = self._process, None
        if process is not None:
            _stop(process)


def _frame(source: IO[bytes]) -> bytes:
    try:
        head = source.read(_FRAME.size)
        if len(head) == _FRAME.size:
            (size,) = _FRAME.unpack(head)
            body = source.read(size)
            if len(body) == size:
                return body
    except (OSError, ValueError) as err:  # the pipe was closed (`cancel`)
        raise Lost("the stream was closed") from err
    raise Lost("the stream ended early")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def _send(out: IO[bytes], frame: bytes) -> None:
    out.write(_FRAME.pack(len(frame)))
    out.write(frame)


def _send_journal(out: IO[bytes], engine: Engine, request: _Request) -> None:
    rows: list[tuple[Any, ...]] = []
    read = engine.store.iter_recorded  # type: ignore[attr-defined]
    for lead_id, entry, kind, stage, at, reason, data in read(
        request.flow, request.now, request.entries, request.moves
    ):
        rows.append((lead_id, entry, kind, stage, at.isoformat(), reason, data))
        if len(rows) >= _ENTRIES_PER_FRAME:
            _send(out, marshal.dumps(rows))
            rows = []
    if rows:
        _send(out, marshal.dumps(rows))
    _send(out, b"")
    out.flush()


def _report(engine: Engine, request: _Request) -> Report:
    from .report.build import build_report

    recorded = engine.compiled(request.flow, request.version)
    return build_report(
        engine.store,
        recorded.flow,
        version=recorded.version,
        now=request.now,
        period=request.period,
        definitions=lambda version: engine.compiled(request.flow, version).flow,
    )


def _answer() -> int:
    """The child: read a request on stdin; send the journal's frames, the
    end of the journal, and the report's pickle on stdout."""
    from ..runtime.engine import Engine
    from ..store import open_store

    request = pickle.loads(sys.stdin.buffer.read())  # sent by the parent process
    if not isinstance(request, _Request):
        return 2
    out = sys.stdout.buffer
    engine = Engine(open_store(request.url), now=request.now)
    try:
        # The report is built in a thread while the journal is sent: sending
        # waits on the pipe at the replay's pace (and waiting lets the
        # report run), so the report is ready when the replay is done.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_report, engine, request)
            _send_journal(out, engine, request)
            report = pending.result()
    finally:
        engine.close()
    bare = replace(report, definition=cast(Any, None))  # the caller puts its own back
    _send(out, pickle.dumps(bare, protocol=pickle.HIGHEST_PROTOCOL))
    out.flush()
    return 0


if __name__ == "__main__":
    # Run as `python -m`, this file is `__main__`; the request's classes are
    # the package module's, so that is the one that answers.
    from saleflow.views.apart import _answer as answer

    sys.exit(answer())
