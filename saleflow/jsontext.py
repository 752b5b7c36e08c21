"""JSON text, with each encoder built once.

Layer 0.  `json.dumps(value, sort_keys=True, ...)` and even a kept
`JSONEncoder(...).encode` build a new C encoder on every call; for the small
documents saleflow writes per audit entry and per lead (a few fields, a few
gate reads) that set-up costs as much as the encoding.  Here the C encoder is
made once per style and called directly; the output is exactly what
`json.JSONEncoder` with the same options gives (`tests/test_jsontext.py`
checks it), and the pure-Python encoder stands in where the C one is missing.

Two styles:

- `canonical`: sorted keys, no spaces, ASCII only, `str()` of anything JSON
  has no type for.  The audit chain hashes this text, so it must never change.
- `compact`: no spaces, UTF-8 kept as is, `str()` of unknown types: what the
  store writes into JSON columns.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

Encode = Callable[[Any], str]


def _encoder(*, sort_keys: bool, ensure_ascii: bool) -> Encode:
    reference = json.JSONEncoder(
        sort_keys=sort_keys, ensure_ascii=ensure_ascii, separators=(",", ":"), default=str
    ).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return reference
    escape = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    try:
        # markers=None: no cycle check (saleflow never builds cyclic values).
        chunks = make(None, str, escape, None, ":", ",", sort_keys, False, True)
    except TypeError:  # another Python's private signature: stay with the public encoder
        return reference
    return _Encoder(chunks)


class _Encoder:
    """A kept C encoder, called as a function.  An object, not a closure:
    psycopg caches its JSON dumpers by function and refuses (with a warning)
    to cache closures."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Callable[[Any, int], Any]) -> None:
        self._chunks = chunks

    def __call__(self, value: Any) -> str:
        return "".join(self._chunks(value, 0))


canonical: Encode = _encoder(sort_keys=True, ensure_ascii=True)
compact: Encode = _encoder(sort_keys=False, ensure_ascii=False)

# One JSON string literal, as `canonical` writes strings.
quote: Encode = json.encoder.encode_basestring_ascii
