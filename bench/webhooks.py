"""Webhook delivery: its throughput against plain HTTP posts, and whether a
hanging endpoint delays another webhook (issue 12, item 3).

Usage: python bench/webhooks.py [--quick] [--backends sqlite,postgresql]

Two figures, each a ratio against a baseline measured in the same run:

- **throughput**: `deliver()` rounds for one webhook over N leads x 5
  entries, against a raw loop that POSTs the same bodies (the same
  `change_json` text) with the same httpx client and the same parallelism
  (4 threads) and writes nothing.  Ratio = raw time / deliver time: the
  share of raw HTTP throughput left after queueing, claiming and recording
  every entry in the database.
- **isolation**: the time until a healthy webhook's receiver has every
  entry, with a second webhook whose endpoint never answers (timeout 1 s)
  against without it.  Ratio = alone / with the hanging neighbour (1.0: no
  delay).

The receiver runs in a process of its own (no shared GIL with the
deliverer) and answers 200 at once, or never for the hanging path.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from saleflow import Engine
from saleflow.jsontext import compact
from saleflow.language.parse import parse_flow
from saleflow.store.hooks import Hook, add_hook
from saleflow.views.serialise import change_json
from saleflow.webhooks.delivery import deliver

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FLOW = """\
flow bench version 1
field note text
event ping
team t "T" {
  stage cold initial
  stage warm when ping >= 2
  stage done manual
}
"""
PG = os.environ.get("SALEFLOW_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _serve(port_out: Any) -> None:
    state = {"count": 0, "last": 0.0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                body = json.dumps(state).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/hang":
                time.sleep(3600)
            with lock:
                state["count"] += 1
                state["last"] = time.time()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    port_out.put(server.server_address[1])
    server.serve_forever()


def stats(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/stats", timeout=5).json())


def fill(url: str, leads: int) -> None:
    with Engine.open(db=url, now=T0, actor="bench") as engine:
        engine.deploy(parse_flow(FLOW, "bench.flow"))
        for n in range(leads):
            lead = f"l{n:05}"
            engine.add_lead(lead, flow="bench")
            engine.set(lead, {"note": "x"})
            engine.record(lead, "ping")
            engine.record(lead, "ping")


def raw_posts(url: str, target: str) -> float:
    with Engine.open(db=url, now=T0) as engine:
        bodies: dict[str, list[bytes]] = {}
        for entry in engine.changes(0):
            bodies.setdefault(entry.lead_id, []).append(compact(change_json(entry)).encode())
    groups = [list(bodies.values())[i::4] for i in range(4)]
    client = httpx.Client(timeout=10)

    def post(group: list[list[bytes]]) -> None:
        for lead in group:
            for body in lead:
                client.post(target, content=body, headers={"Content-Type": "application/json"})

    start = time.perf_counter()
    threads = [threading.Thread(target=post, args=(g,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def delivered(url: str, limit: int, timeout: float) -> float:
    start = time.perf_counter()
    with Engine.open(db=url, now=T0) as engine:
        while deliver(engine, limit=limit, timeout=timeout).busy:
            pass
    return time.perf_counter() - start


def scratch(backend: str, tmp: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}", None
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"saleflow_bench_{uuid.uuid4().hex[:10]}"
    admin = make_url(PG)
    args = {"host": admin.host, "port": admin.port or 5432, "user": admin.username, "dbname": admin.database}
    with psycopg.connect(**args, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(**args, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    return admin.set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False
    ), drop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default="sqlite,postgresql")
    options = parser.parse_args()
    leads = 40 if options.quick else 200
    ports: Any = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    receiver.start()
    base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    print(f"{leads} leads x 5 entries; python {sys.version.split()[0]}, {os.cpu_count()} cores")
    try:
        with tempfile.TemporaryDirectory() as folder:
            for backend in options.backends.split(","):
                # Throughput: one webhook, against raw posts of the same bodies.
                url, drop = scratch(backend, Path(folder))
                try:
                    with Engine.open(db=url, now=T0) as engine:
                        add_hook(engine.store, Hook("one", f"{base}/one", None, (), (), None, T0))
                    fill(url, leads)
                    raw = raw_posts(url, f"{base}/raw")
                    ours = delivered(url, 100, 10.0)
                    print(
                        f"{backend:<10} throughput: raw {leads * 5 / raw:8.0f} posts/s, "
                        f"deliver {leads * 5 / ours:8.0f} entries/s, ratio {raw / ours:.2f}"
                    )
                finally:
                    if drop:
                        drop()
                # Isolation: a healthy webhook alone, then beside one that hangs.
                times = []
                for neighbour in (False, True):
                    url, drop = scratch(backend, Path(folder))
                    try:
                        with Engine.open(db=url, now=T0) as engine:
                            add_hook(engine.store, Hook("fine", f"{base}/fine", None, (), (), None, T0))
                            if neighbour:
                                add_hook(engine.store, Hook("hang", f"{base}/hang", None, (), (), None, T0))
                        fill(url, leads)
                        before = stats(base)["count"]
                        start = time.time()
                        done = threading.Thread(target=delivered, args=(url, 10 * leads, 1.0))
                        done.start()
                        while stats(base)["count"] - before < leads * 5:
                            time.sleep(0.01)
                        times.append(stats(base)["last"] - start)
                        done.join()
                    finally:
                        if drop:
                            drop()
                print(
                    f"{backend:<10} isolation: healthy webhook done in {times[0]:.2f} s alone, "
                    f"{times[1]:.2f} s beside a hanging one, ratio {times[0] / times[1]:.2f}"
                )
    finally:
        receiver.terminate()


if __name__ == "__main__":
    main()
