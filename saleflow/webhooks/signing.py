"""The `Saleflow-Signature` header: HMAC-SHA256 of a delivery's exact body.

A receiver recomputes it over the raw bytes it received (before parsing
them) with the shared secret and compares with `hmac.compare_digest`;
`verify` does just that, for receivers written in Python and for the tests.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "Saleflow-Signature"
DELIVERY_HEADER = "Saleflow-Delivery"
PREFIX = "sha256="


def signature(secret: str, body: bytes) -> str:
    """The header's value: ``sha256=`` and the hex HMAC-SHA256 of `body`
    keyed with the secret's UTF-8 bytes."""
    return PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body` under `secret`."""
    return header is not None and hmac.compare_digest(signature(secret, body), header)
