"""The HTTP service: `saleflow serve`, an authenticated JSON API and a live
dashboard over the same `Engine` (SPEC §9).

FastAPI and uvicorn are an optional extra (`pip install saleflow[server]`):
nothing in this package's `__init__` or in `commands` imports them at module
level, so the CLI's other commands start as fast as before.

Modules: `tokens` (secrets and their hashes), `commands` (the click
commands), `app` (the application factory), `auth`, `errors`, `bodylimit`,
`inputs` (request values checked as the CLI checks them), `context`, `idempotency`,
`leads`, `flows`, `reports` (the routes), `dashboard` and `script` (the
pages).
"""
