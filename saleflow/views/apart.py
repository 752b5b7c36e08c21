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

`Apart.start` starts a Python child (``python -P``, with this process's
module path, so it imports what this process imports from where it does,
and nothing from the current folder) on the same database: a SQLite file by
its absolute path, or a server (`SqlStore.shared_url`).  `entries()`
yields the journal as `iter_recorded` would; it raises `Lost` when the
stream breaks off (the other process failed: the database refused it, the
file or the flow is not there, an entry did not decode, it was killed).
`report()` is the report, or None when the other process gave none.
Either way the caller does the work itself then, so an error reaches the
user exactly as it would have without this module.  The child never
creates a database, checks the flow before it sends anything, and exits at
once when its parent stops reading.

The request (a pickle: the URL may hold a password) goes on the child's
stdin; the frames and the report come back on a pipe of their own, so
nothing printed on stdout can mix into them.  Both ends are this package,
started by this process, and nothing else writes to those pipes.  The
report's flow definition is not sent back: the caller's own `Flow` is put
in its place.
"""

from __future__ import annotations

import json
import marshal
import os
import pickle
import struct
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, cast

from ..model.flow import Flow
from .report import Period, Report

if TYPE_CHECKING:
    from ..runtime.engine import Engine

_FRAME = struct.Struct("<I")  # the length of the frame that follows; 0 ends the journal
_ENTRIES_PER_FRAME = 4000
# The child: with -P nothing of the current folder comes before the standard
# library; then exactly the parent's module path, so it imports this same
# package and what it imports, from where the parent does.
_CHILD = (
    "import json, os, sys; sys.path[:] = json.loads(os.environ['SALEFLOW_APART_PATH']); "
    "from saleflow.views.apart import _answer; sys.exit(_answer())"
)
_PYTHONS = ("python", "pypy")  # what `sys.executable` may be called to be started as a child

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

    def __init__(
        self, process: subprocess.Popen[bytes] | None = None, source: IO[bytes] | None = None
    ) -> None:
        self._process = process
        self._source = source  # the pipe the frames come on
        self._read = False  # the journal was read to its end

    @property
    def started(self) -> bool:
        """Whether another process was started (and not yet stopped)."""
        return self._process is not None

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
        database at `url`, in another process.  Where no Python can be
        started (this process is not one: an embedding host's binary,
        say), none is, and the caller does the work itself."""
        executable = sys.executable or ""
        if not os.path.basename(executable).lower().startswith(_PYTHONS):
            return cls()
        request = pickle.dumps(_Request(url, flow, version, now, period, entries, moves))
        path = [entry for entry in sys.path if isinstance(entry, str)]
        # The frames come on a pipe of their own: nothing the interpreter or
        # a site hook prints on stdout can mix into them.
        read_end, write_end = os.pipe()
        environment = dict(os.environ, SALEFLOW_APART_PATH=json.dumps(path), SALEFLOW_APART_FD=str(write_end))
        try:
            process = subprocess.Popen(
                [executable, "-P", "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=environment,
                pass_fds=(write_end,),
            )
        except (OSError, ValueError):  # no such program; no pass_fds on this system
            os.close(read_end)
            return cls()
        finally:
            os.close(write_end)
        source = os.fdopen(read_end, "rb")
        apart = cls(process, source)
        try:
            # The request (the URL may hold a password) goes on the child's
            # stdin, never to a file or a command line; it fits the pipe.
            assert process.stdin is not None
            process.stdin.write(request)
            process.stdin.close()
        except OSError:
            apart.cancel()
            return cls()
        return apart

    def entries(self) -> Iterator[Row]:
        """The recorded entries, in the order `iter_recorded` gives them."""
        source = self._source
        if self._process is None or source is None:
            raise Lost("no other process")
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
        process, source = self._process, self._source
        if process is None or source is None or not self._read:
            self.cancel()
            return None
        try:
            answer = _frame(source)
            code = process.wait()
        except Lost:
            return None
        finally:
            self.cancel()
        if code != 0:
            return None
        try:
            report = pickle.loads(answer)  # our own child's answer, on a private pipe
        except Exception:  # a truncated answer: the caller builds it
            return None
        return replace(report, definition=definition) if isinstance(report, Report) else None

    def cancel(self) -> None:
        """Stop the other process if it is still working (nothing waits for
        it), and close the pipe."""
        process, source, self._process, self._source = self._process, self._source, None, None
        if source is not None:
            source.close()
        if process is not None:
            if process.poll() is None:
                process.kill()
            process.wait()


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
    from .report.build import report_for

    return report_for(engine, request.flow, period=request.period, version=request.version, now=request.now)


def _answer() -> int:
    """The child: read a request on stdin; send the journal's frames, the
    end of the journal, and the report's pickle on the pipe it was given.
    It never creates a database: a SQLite file that is not there is an
    error (the parent then does the work and says so)."""
    from ..runtime.engine import Engine
    from ..store import open_store
    from ..store.connect import parse_url, sqlite_file

    request = pickle.loads(sys.stdin.buffer.read())  # sent by the parent process
    if not isinstance(request, _Request):
        return 2
    path = sqlite_file(parse_url(request.url))
    if path is not None and not os.path.isfile(path):
        return 3
    out = os.fdopen(int(os.environ["SALEFLOW_APART_FD"]), "wb")
    engine = Engine(open_store(request.url), now=request.now)
    try:
        engine.compiled(request.flow, request.version)  # there, before anything is sent
        # The report is built in a thread while the journal is sent: sending
        # waits on the pipe at the replay's pace (and waiting lets the
        # report run), so the report is ready when the replay is done.
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_report, engine, request)
            try:
                _send_journal(out, engine, request)
                report = pending.result()
                bare = replace(report, definition=cast(Any, None))  # the caller puts its own back
                _send(out, pickle.dumps(bare, protocol=pickle.HIGHEST_PROTOCOL))
                out.flush()
            except BrokenPipeError:  # the parent is gone or gave up: so is its report
                os._exit(1)
    finally:
        engine.close()
    return 0
