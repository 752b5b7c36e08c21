"""JSON on stdout: a value at once (`echo_json`), or a listing streamed as it
is read (`stream_json`, a JSON array or JSON Lines) in the very text
`json.dumps` would write, with flat memory whatever its length."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import click

from ..errors import BadInput


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


STREAMED_ITEMS = 500  # items of a streamed listing written at a time


def stream_json(items: Iterable[Any], *, lines: bool = False) -> None:
    """A listing as it is read, never built whole: a JSON array written item
    by item, the very text `echo_json` prints for the whole list; or, with
    `lines`, JSON Lines (one compact object a line).  An error while reading
    ends the output where it is (the error on stderr, and its exit code)."""
    out = sys.stdout
    parts: list[str] = []
    count = 0
    for item in items:
        if lines:
            parts.append(_compact(item) + "\n")
        else:
            parts.append(("[\n  " if count == 0 else ",\n  ") + _indented(item))
        count += 1
        if len(parts) >= STREAMED_ITEMS:
            out.write("".join(parts))
            out.flush()
            parts.clear()
    if not lines:
        parts.append("[]\n" if count == 0 else "\n]\n")
    out.write("".join(parts))
    out.flush()


# Python's JSON encoder is pure Python once asked to indent; a listing's
# rows are flat objects, so each value goes through the C encoder instead.
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
_SCALARS = (str, int, float, bool, type(None))


_quote: Any = getattr(json.encoder, "c_encode_basestring", None) or json.encoder.encode_basestring


def _scalar(value: Any) -> str:
    """A plain value as `json.dumps(..., ensure_ascii=False)` writes it."""
    kind = type(value)
    if kind is str:
        return str(_quote(value))
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _encode(value)  # floats (NaN, Infinity) exactly as json writes them


def _indented(item: Any) -> str:
    """`item` as `echo_json` indents it inside a list (two more spaces)."""
    if (
        type(item) is dict
        and item
        and all(type(k) is str and isinstance(v, _SCALARS) for k, v in item.items())
    ):
        inner = ",\n    ".join(f"{_quote(key)}: {_scalar(value)}" for key, value in item.items())
        return "{\n    " + inner + "\n  }"
    return json.dumps(item, indent=2, ensure_ascii=False, default=str).replace("\n", "\n  ")


def _compact(item: Any) -> str:
    return _encode(item)


def json_format(as_json: bool, as_jsonl: bool) -> bool:
    """Whether a listing prints JSON (`--json` or `--jsonl`); both is bad input."""
    if as_json and as_jsonl:
        raise BadInput("--json and --jsonl cannot be used together; choose one")
    return as_json or as_jsonl
