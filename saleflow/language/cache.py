"""Parsed flows kept on disk by their text, so that running a deployed flow
does not parse it again.

Layer 2.  Every command on leads compiles its flow from the text stored at
deploy, and parsing it (Lark's import, the parser's load, the parse) was
most of what a small command such as `saleflow show` cost.  `parse_cached`
answers from `flow-KEY.json` in the cache folder, KEY the SHA-256 of the
text, its path, and a fingerprint of the code that turns text into a model
(the grammar, the language and model packages, errors and limits: their
sizes and modification times): a change to any of them is a new key, never a stale model.  This module imports neither Lark nor the parser
until a flow is not in the cache.

A cache file is data, read as untrusted: JSON, never pickle; a header line
holding the format, the key and a SHA-256 digest of the body; and a body
that `model.codec.from_data` checks against the model's types.  A file that
fails any check is ignored and written again; a cache folder that cannot be
had or written means no cache, never an error.  The folder is `cache_dir()`'s
(files.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from ..model.codec import from_data, to_data
from ..model.flow import Flow
from .files import cache_dir, grammar_path

FORMAT = 1
_HERE = Path(__file__).resolve().parent


_FINGERPRINT: list[str] = []


def fingerprint() -> str | None:
    """What identifies the code whose output the cache holds: the size and
    modification time (as Python's own bytecode cache does) of the grammar
    and of every module of the language and model packages, errors.py and
    limits.py, so that editing any of them is a new key; None when one
    cannot be found (then nothing is cached)."""
    if not _FINGERPRINT:
        package = _HERE.parent
        try:
            files = [
                grammar_path(),
                package / "errors.py",
                package / "limits.py",
                *sorted(_HERE.glob("*.py")),
                *sorted((package / "model").glob("*.py")),
            ]
            stamps = [
                f"{path.name}:{info.st_size}:{info.st_mtime_ns}" for path in files for info in [path.stat()]
            ]
        except Exception:  # OSError, or the grammar missing (BadInput): no cache
            return None
        _FINGERPRINT.append(hashlib.sha256(f"format {FORMAT}\n{chr(10).join(stamps)}".encode()).hexdigest())
    return _FINGERPRINT[0]


def cache_key(text: str, path: str) -> str | None:
    """The key of a flow's text read from `path`; None when there is no cache."""
    code = fingerprint()
    if code is None:
        return None
    digest = hashlib.sha256(code.encode())
    for part in (path, text):
        encoded = part.encode("utf-8", "surrogatepass")
        digest.update(b"%d:" % len(encoded) + encoded)
    return digest.hexdigest()


def parse_cached(text: str, path: str = "<string>") -> Flow:
    """`parse_flow(text, path)`, from the cache when it holds it (and into
    it when not); raises what `parse_flow` raises."""
    folder = cache_dir()
    key = None if folder is None else cache_key(text, path)
    if folder is not None and key is not None:
        file = folder / f"flow-{key[:40]}.json"
        found = read_cached(file, key)
        if found is not None:
            return found
    from .parse import parse_flow

    flow = parse_flow(text, path)
    if folder is not None and key is not None:
        write_cached(file, key, flow)
    return flow


def read_cached(file: Path, key: str) -> Flow | None:
    """The flow in a cache file, or None when the file is missing, damaged,
    another key's, or not a flow."""
    try:
        with file.open("rb") as stream:
            head = stream.readline(4096)
            body = stream.read()
    except OSError:
        return None
    try:
        header = json.loads(head)
        if header != {"format": FORMAT, "key": key, "sha256": hashlib.sha256(body).hexdigest()}:
            return None
        return from_data(json.loads(body))
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None


def write_cached(file: Path, key: str, flow: Flow) -> None:
    """Write `flow` to its cache file, whole or not at all (another process
    reading it sees the old file or the new one); failures are ignored."""
    import tempfile

    temporary = None
    try:
        body = json.dumps(to_data(flow), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        header = {"format": FORMAT, "key": key, "sha256": hashlib.sha256(body).hexdigest()}
        descriptor, temporary = tempfile.mkstemp(dir=file.parent, prefix=".flow-", suffix=".tmp")  # mode 0600
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(json.dumps(header).encode("ascii") + b"\n" + body)
        os.replace(temporary, file)
        temporary = None
    except (OSError, ValueError, RecursionError):  # a full disk, a lone surrogate, a flow nested very deep
        pass
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
