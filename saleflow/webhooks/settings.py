"""What `webhook add` accepts: a name, an http(s) URL, filters, a secret's
environment variable.

Every value is judged here before anything is written, each refusal one
sentence (`BadInput`, or `NotFound` for a flow or stage that does not
exist).  A URL that carries credentials (``https://user:pass@host/``) is
refused without echoing them: the database must never hold a secret, and
`webhook list` shows URLs; sign with ``--secret-env`` instead.  A secret in
the query string cannot be told from any other parameter and is stored as
given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import BadInput, NotFound, did_you_mean
from ..journal import ENTRY_KINDS
from ..limits import MAX_URL_LENGTH, check_id, check_text
from ..runtime.arguments import checked_kind
from ..store.hooks import Hook

if TYPE_CHECKING:
    from ..runtime.engine import Engine

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
MAX_FILTERS = 100  # kinds or stages named by one webhook


def check_name(name: str) -> str:
    return check_id(name, "a webhook name")


def check_url(url: str) -> str:
    """An absolute http or https URL with a host, no credentials, no spaces
    or control characters, at most MAX_URL_LENGTH characters."""
    if not url:
        raise BadInput("a webhook URL must not be empty")
    check_text(url, "a webhook URL", limit=MAX_URL_LENGTH)
    if _SPACE_OR_CONTROL.search(url):
        raise BadInput("a webhook URL holds a space or a control character; percent-encode it (%20)")
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not 0-65535
        host = parts.hostname
    except ValueError:
        raise BadInput(
            "a webhook URL must be http://HOST[:PORT]/… or https://…; this one does not parse"
        ) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise BadInput("a webhook URL must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise BadInput(
            "a webhook URL must not hold credentials (user:password@): the database never stores "
            "secrets; sign deliveries with --secret-env VAR instead"
        )
    if not host:
        raise BadInput("a webhook URL must name a host (https://HOST/…)")
    if port == 0:
        raise BadInput("a webhook URL's port must be from 1 to 65535")
    try:
        host.encode("idna")
    except UnicodeError:
        raise BadInput("a webhook URL's host is not a valid host name") from None
    return url


def check_env_name(name: str) -> str:
    """The name of an environment variable: letters, digits and _, not
    starting with a digit."""
    check_id(name, "--secret-env")
    if not _ENV_NAME.fullmatch(name):
        raise BadInput(
            "--secret-env takes the NAME of an environment variable (letters, digits and _), "
            "not the secret itself"
        )
    return name


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    found: list[str] = []
    for kind in map(checked_kind, kinds):
        if kind not in found:
            found.append(kind)
    if len(found) > MAX_FILTERS:
        raise BadInput(f"a webhook names at most {MAX_FILTERS} kinds")
    return tuple(k for k in ENTRY_KINDS if k in found)  # one order, whatever the order given


def check_stages(engine: Engine, flow: str | None, stages: Iterable[str]) -> tuple[str, ...]:
    """Stage names, sorted; with a flow, each must be a stage of one of its
    deployed versions (`NotFound` otherwise)."""
    found = sorted({check_id(stage, "a stage name") for stage in stages})
    if len(found) > MAX_FILTERS:
        raise BadInput(f"a webhook names at most {MAX_FILTERS} stages")
    if flow is None or not found:
        return tuple(found)
    known: set[str] = set()
    for version, _hash, _source in engine.store.deployed_versions(flow):
        known.update(stage.name for stage in engine.compiled(flow, version).flow.stages)
    for stage in found:
        if stage not in known:
            hint = did_you_mean(stage, known)
            raise NotFound(f'flow "{flow}" has no stage "{stage}"' + (f" ({hint})" if hint else ""))
    return tuple(found)


def new_hook(
    engine: Engine,
    name: str,
    url: str,
    *,
    flow: str | None = None,
    kinds: Iterable[str] = (),
    stages: Iterable[str] = (),
    secret_env: str | None = None,
    now: datetime,
) -> Hook:
    """A webhook's settings, every value judged (a flow must be deployed)."""
    check_name(name)
    check_url(url)
    if flow is not None:
        check_id(flow, "a flow name")
        engine.store.latest_version(flow)  # NotFound when it is not deployed
    if secret_env is not None:
        check_env_name(secret_env)
    return Hook(
        name=name,
        url=url,
        flow=flow,
        kinds=check_kinds(kinds),
        stages=check_stages(engine, flow, stages),
        secret_env=secret_env,
        created_at=now,
    )
