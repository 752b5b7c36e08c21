"""Positions, diagnostics and the error hierarchy.

Layer 0: everything else may import this module; it imports nothing from
saleflow.  A `Diagnostic` is a value (checks collect them, the CLI prints
them); a `SaleflowError` is raised at run time and carries the exit code the
CLI maps it to, so there is exactly one place that turns failures into exit
codes (SPEC §4).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]

# Exit codes of SPEC §4.
EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
# Added to SPEC §4's codes: the database cannot be reached now (a server
# down, a network gone); the same command may work later, unlike bad input.
EXIT_UNAVAILABLE = 5


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file; lines and columns count from 1."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NO_SPAN = Span("<none>", 0, 0, 0, 0)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding of the parser or the checker."""

    code: str
    severity: Severity
    span: Span
    message: str
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def headline(self) -> str:
        return f"{self.span}: {self.severity}[{self.code}]: {self.message}"

    def render(self, source: str | None = None) -> str:
        """Compiler style: headline, the source line, a caret, a hint."""
        lines = [self.headline()]
        if source is not None and self.span.line > 0:
            # Lines as the parser counts them: "\n", "\r\n" or a lone "\r"
            # (not the U+2028, form feed, … that `str.splitlines` splits on).
            text_lines = _source_lines(source)
            if self.span.line <= len(text_lines):
                text = text_lines[self.span.line - 1].replace("\t", " ")
                width = 1
                if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
                    width = self.span.end_column - self.span.column
                text, column, width = _window(text, self.span.column, width)
                gutter = f"{self.span.line:>4} | "
                lines.append(gutter + text)
                pad = " " * (len(gutter) - 2) + "| "
                lines.append(pad + " " * (column - 1) + "^" * width)
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.span.file,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


@functools.lru_cache(maxsize=4)
def _source_lines(source: str) -> tuple[str, ...]:
    """The lines of `source`, split once for all of its diagnostics (a flow
    with 10,000 diagnostics is not split 10,000 times; a string caches its
    hash, so looking it up again costs nothing)."""
    return tuple(source.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


SHOWN_WIDTH = 120  # characters of a source line shown under a diagnostic


def _window(text: str, column: int, width: int) -> tuple[str, int, int]:
    """Cut a long source line to about SHOWN_WIDTH characters around the
    caret (marking the cuts with "…"); returns the text, the caret's column
    in it and the caret's width."""
    if len(text) <= SHOWN_WIDTH:
        return text, column, width
    width = min(width, SHOWN_WIDTH // 2)
    start = max(0, column - 1 - SHOWN_WIDTH // 3)
    end = min(len(text), start + SHOWN_WIDTH)
    shown = text[start:end]
    column -= start
    if start > 0:
        shown, column = "…" + shown, column + 1
    if end < len(text):
        shown += "…"
    return shown, column, width


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """A `did you mean "x"?` hint for a near-miss name, or None."""
    import difflib  # only when a name is wrong: every command imports this module

    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else None


class SaleflowError(Exception):
    """Base of every error saleflow raises on purpose; carries its exit code."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class BadInput(SaleflowError):
    """Malformed input or usage: a value of the wrong type, a bad date, a missing file."""

    exit_code = EXIT_BAD_INPUT


class FlowInvalid(BadInput):
    """A flow file that does not parse or check; holds every diagnostic."""

    def __init__(self, path: str, diagnostics: Sequence[Diagnostic], source: str | None = None) -> None:
        errors = [d for d in diagnostics if d.is_error]
        first = errors[0].headline() if errors else f"{path}: invalid flow"
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        super().__init__(first + more)
        self.path = path
        self.diagnostics = tuple(diagnostics)
        self.source = source


class NotFound(SaleflowError):
    """A lead, flow, stage, field or event that does not exist."""

    exit_code = EXIT_NOT_FOUND


class Rejected(SaleflowError):
    """A move whose gate failed, or a refused operation; carries the blockers."""

    exit_code = EXIT_REJECTED

    def __init__(
        self,
        message: str,
        *,
        lead_id: str | None = None,
        stage: str | None = None,
        blockers: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.lead_id = lead_id
        self.stage = stage
        self.blockers = tuple(blockers)


class Conflict(SaleflowError):
    """A concurrent update that persisted after retries."""

    exit_code = EXIT_CONFLICT


class StoreError(SaleflowError):
    """The database cannot be used: unreachable, read-only, or a newer schema."""

    exit_code = EXIT_BAD_INPUT


class Unavailable(StoreError):
    """The database cannot be reached now; retry later (exit 5)."""

    exit_code = EXIT_UNAVAILABLE


class WrongKey(StoreError):
    """The journal is sealed with another key than the one given (or with
    one, or without one): writing would mix seals in one chain, and
    checking would fail every entry."""

    exit_code = EXIT_BAD_INPUT
