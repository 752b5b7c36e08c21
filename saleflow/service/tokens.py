"""API tokens: how a secret is made, and what of it is stored.

A token is 32 bytes from `secrets` (256 bits), so it cannot be guessed or
brute-forced from its hash: a slow password hash (bcrypt, scrypt) buys
nothing for such a secret and would cost every request tens of
milliseconds.  A plain SHA-256 of the token (with a domain prefix) is
stored, which also lets the service find a token by an indexed lookup of its
hash; the found hash is still compared in constant time (`matches`).  The
secret itself is printed once by `token add` and never stored or logged.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

SCOPES: tuple[str, ...] = ("read", "write", "admin")
PREFIX = "sft_"
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
_SHAPE = re.compile(r"sft_[A-Za-z0-9_-]{43}")


def new_token() -> str:
    """A fresh secret: the prefix (so a leaked one is easy to search for) and
    256 random bits, URL-safe base64."""
    return PREFIX + secrets.token_urlsafe(32)


def well_formed(token: str) -> bool:
    """Whether `token` has the shape of one we issue (checked before hashing,
    so a megabyte of garbage in a header is not hashed)."""
    return _SHAPE.fullmatch(token) is not None


def token_hash(token: str) -> str:
    """What is stored of a token: SHA-256 of it, hex."""
    return hashlib.sha256(b"saleflow-api-token\x00" + token.encode("utf-8")).hexdigest()


def matches(stored_hash: str, token: str) -> bool:
    """Constant-time comparison of a stored hash with a presented token's."""
    return hmac.compare_digest(stored_hash.encode("ascii"), token_hash(token).encode("ascii"))


def allows(scope: str, needed: str) -> bool:
    """admin > write > read: a token may do what its scope and lower ones may."""
    return _RANK.get(scope, -1) >= _RANK[needed]
