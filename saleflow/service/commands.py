"""`saleflow serve` and `saleflow token add|list|revoke`.

Registered on the CLI's group by two lines of `COMMANDS` in `saleflow/cli/app.py`.  This
module imports neither FastAPI nor SQLAlchemy at import time (the CLI imports
it for `token` too): `serve` imports uvicorn when it runs, and the token
commands open the store when they run.  The global options (`--db`, `--now`)
come from the click context the CLI group sets up.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any

import click

from ..errors import BadInput
from ..limits import check_id
from ..wording import plural
from .tokens import SCOPES, new_token, token_hash

_SQLITE_WORKERS = (
    "--workers above 1 needs PostgreSQL: SQLite lets one process write at a time, and its file "
    "locking across processes makes more workers slower, not faster (one worker already serves "
    "many requests at once)"
)


def _settings(ctx: click.Context) -> Any:
    settings = ctx.find_root().obj
    if settings is None or not hasattr(settings, "db"):  # pragma: no cover - always run under `saleflow`
        raise click.UsageError("run this as `saleflow serve` or `saleflow token …`")
    return settings


def _now(settings: Any) -> datetime:
    return settings.now or datetime.now(UTC)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes (PostgreSQL only; one process serves requests in threads).",
)
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the HTTP/JSON API and the live dashboard (pip install 'saleflow[server]')."""
    settings = _settings(ctx)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise BadInput("saleflow serve needs the server extra: pip install 'saleflow[server]'") from None
    from ..store import open_store

    # Open (and migrate) the database once before serving: a bad URL is one
    # sentence here, and several workers do not race to create the schema.
    store = open_store(settings.db)
    dialect = store.dialect
    store.close()
    if workers > 1 and dialect == "sqlite":
        raise BadInput(_SQLITE_WORKERS)
    os.environ["SALEFLOW_DB"] = settings.db
    if settings.now is not None:
        os.environ["SALEFLOW_NOW"] = settings.now.isoformat()
    uvicorn.run(
        "saleflow.service.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        server_header=False,
        log_level="info",
    )


@click.group("token")
def token_group() -> None:
    """API tokens for `saleflow serve`: add, list, revoke."""


@token_group.command("add")
@click.argument("name")
@click.option(
    "--scope", type=click.Choice(SCOPES), required=True, help="read, write (and read), admin (and deploy)."
)
@click.pass_context
def token_add_command(ctx: click.Context, name: str, scope: str) -> None:
    """Create a token; it is printed once, and only its hash is stored."""
    from ..store import open_store
    from ..store.service import add_token

    settings = _settings(ctx)
    check_id(name, "a token name")
    token = new_token()
    with open_store(settings.db) as store:
        add_token(store, name, scope, token_hash(token), _now(settings))
    click.echo(token)
    click.echo(f'token "{name}" (scope {scope}) created; keep it now: it is not shown again', err=True)


@token_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def token_list_command(ctx: click.Context, as_json: bool) -> None:
    """Tokens by name: scope, created, last used, revoked (never the secrets)."""
    from ..store import open_store
    from ..store.service import list_tokens

    with open_store(_settings(ctx).db) as store:
        rows = list_tokens(store)

    def when(value: datetime | None) -> str | None:
        return None if value is None else value.isoformat(timespec="seconds")

    listed = [
        {
            "name": r.name,
            "scope": r.scope,
            "created_at": when(r.created_at),
            "last_used_at": when(r.last_used_at),
            "revoked_at": when(r.revoked_at),
        }
        for r in rows
    ]
    if as_json:
        click.echo(json.dumps(listed, indent=2, ensure_ascii=False))
        return
    for row in listed:
        state = (
            f"revoked {row['revoked_at']}"
            if row["revoked_at"]
            else f"last used {row['last_used_at'] or 'never'}"
        )
        click.echo(f"{row['name']:<24} {row['scope']:<6} created {row['created_at']}  {state}")
    click.echo(plural(len(listed), "token"))


@token_group.command("revoke")
@click.argument("name")
@click.pass_context
def token_revoke_command(ctx: click.Context, name: str) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from ..store import open_store
    from ..store.service import revoke_token

    settings = _settings(ctx)
    with open_store(settings.db) as store:
        revoke_token(store, name, _now(settings))
    click.echo(f'token "{name}" revoked')
