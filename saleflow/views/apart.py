"""A flow's recorded report, built in another process while this one works.

Layer 5.  `saleflow simulate` needs two things that do not depend on each
other: the report of what was recorded (mostly the database's work, and
Python's decoding of what it sends) and the replay (all Python).  In one
process they share one interpreter lock: run side by side in two threads,
each stalls the other, and at 100,000 leads the pair took longer than the
two one after the other.  A second process has its own interpreter, so the
recorded report costs a core, not time.

`start_report` starts ``python -m saleflow.views.apart`` on the same
database (a SQLite file or a server: a URL another process can open) and
returns an `ApartReport`; its `result()` is the `Report`, or None when the
process could not give one (it could not start, the database refused it,
it was interrupted).  The caller then builds the report itself, so an error
reaches the user exactly as it would have without this module.

The request and the report travel as pickles, in a temporary file given
as the child's stdin and over its stdout: both ends are this package, started by this process, and nothing
else writes to those pipes.  The report's flow definition is not sent back:
the caller's own `Flow` is put in its place.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from ..model.flow import Flow
from .report import Period, Report

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


@dataclass(frozen=True)
class _Request:
    url: str
    flow: str
    version: int
    now: datetime
    period: Period


class ApartReport:
    """A report being built by another process (`start_report`)."""

    def __init__(self, process: subprocess.Popen[bytes] | None) -> None:
        self._process = process

    def result(self, definition: Flow) -> Report | None:
        """The report, waiting for it, with `definition` as its flow (the
        caller's own); None when the other process gave none."""
        process, self._process = self._process, None
        if process is None:
            return None
        try:
            out, _ = process.communicate()
        except BaseException:
            _stop(process)
            raise
        if process.returncode != 0:
            return None
        try:
            report = pickle.loads(out)  # our own child's answer, on a private pipe
        except Exception:  # a truncated answer: the caller builds it
            return None
        return replace(report, definition=definition) if isinstance(report, Report) else None

    def cancel(self) -> None:
        """Stop the other process if it is still working (nothing waits for it)."""
        process, self._process = self._process, None
        if process is not None:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate()


def start_report(url: str, flow: str, version: int, now: datetime, period: Period) -> ApartReport:
    """Start building `flow`'s report (deployed `version`, as of `now`, over
    `period`) from the database at `url` in another process."""
    environment = dict(os.environ)
    # The child imports this same package, wherever it was imported from.
    path = environment.get("PYTHONPATH")
    environment["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + path if path else "")
    try:
        # The request waits in a file: the child reads it when it is ready,
        # and the pipes left to `communicate` are only its answer.
        with tempfile.TemporaryFile() as request:
            pickle.dump(_Request(url, flow, version, now, period), request)
            request.seek(0)
            process = subprocess.Popen(
                [sys.executable, "-m", "saleflow.views.apart"],
                stdin=request,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=environment,
            )
    except OSError:
        return ApartReport(None)
    return ApartReport(process)


def _answer() -> int:
    """The child: read a request on stdin, write the report's pickle on stdout."""
    from ..runtime.engine import Engine
    from ..store import open_store
    from .report.build import build_report

    request = pickle.loads(sys.stdin.buffer.read())  # sent by the parent process
    if not isinstance(request, _Request):
        return 2
    engine = Engine(open_store(request.url), now=request.now)
    try:
        recorded = engine.compiled(request.flow, request.version)
        report = build_report(
            engine.store,
            recorded.flow,
            version=recorded.version,
            now=request.now,
            period=request.period,
            definitions=lambda version: engine.compiled(request.flow, version).flow,
        )
    finally:
        engine.close()
    bare = replace(report, definition=cast(Any, None))  # the caller puts its own back
    sys.stdout.buffer.write(pickle.dumps(bare, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    # Run as `python -m`, this file is `__main__`; the request's classes are
    # the package module's, so that is the one that answers.
    from saleflow.views.apart import _answer as answer

    sys.exit(answer())
