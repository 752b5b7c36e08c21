"""Load on `saleflow serve`: 8 concurrent clients on loopback, on SQLite and
PostgreSQL (issue 13).

    python bench/service.py            # 8 clients x 250 requests per backend
    python bench/service.py --quick    # 8 clients x 40 requests

Each client sends a mix of event POSTs (half) and lead reads, bounded in
count (and at most 120 s per backend).  Reported: requests/s, p50/p99
latency, the POST event rate, and, measured in the same run, the Python
API's rate of `Engine.record` (one transaction each) on the same database:
their ratio is the cost of HTTP, JSON, auth and the answer's `show`.  The
run fails on any 5xx, or when a lead's event count differs from the POSTs
acknowledged for it.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FLOW = ROOT / "flows" / "the_model.flow"
SALEFLOW = str(Path(sys.executable).parent / "saleflow")
PG_ADMIN = os.environ.get("SALEFLOW_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
CLIENTS = 8
LEADS = 64


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(db: str, *args: str) -> str:
    done = subprocess.run([SALEFLOW, "--db", db, *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def run_backend(db: str, requests_per_client: int) -> dict[str, Any]:
    from saleflow.runtime.engine import Engine

    cli(db, "deploy", str(FLOW))
    token = cli(db, "token", "add", f"bench-{uuid.uuid4().hex[:6]}", "--scope", "write")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [SALEFLOW, "--db", db, "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers) as setup:
            for n in range(LEADS):
                assert setup.post("/v1/leads", json={"id": f"lead-{n}"}).status_code == 201
        acknowledged = [0] * LEADS
        latencies: list[float] = []
        post_latencies: list[float] = []
        statuses: dict[int, int] = {}
        lock = threading.Lock()
        deadline = time.monotonic() + 120

        def client(seed: int) -> None:
            rng = random.Random(seed)
            with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
                for _ in range(requests_per_client):
                    if time.monotonic() > deadline:
                        return
                    lead = rng.randrange(LEADS)
                    post = rng.random() < 0.5
                    start = time.perf_counter()
                    if post:
                        answer = http.post(f"/v1/leads/lead-{lead}/events", json={"event": "web_visit"})
                    else:
                        answer = http.get(f"/v1/leads/lead-{lead}")
                    took = time.perf_counter() - start
                    with lock:
                        latencies.append(took)
                        statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                        if post:
                            post_latencies.append(took)
                            if answer.status_code == 200:
                                acknowledged[lead] += 1

        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)

    with Engine.open(db=db, actor="bench") as engine:
        counted = [sum(e.count for e in engine.store.events_of(f"lead-{n}")) for n in range(LEADS)]
        # The Python API's per-operation rate, same database, same run.
        engine.add_lead("api-lead", flow="the_model")
        ops = max(50, len(post_latencies) // 4)
        start = time.perf_counter()
        for _ in range(ops):
            engine.record("api-lead", "web_visit")
        api_rate = ops / (time.perf_counter() - start)

    five_xx = sum(count for status, count in statuses.items() if status >= 500)
    assert five_xx == 0, f"{five_xx} answers were 5xx: {statuses}"
    assert counted == acknowledged, "a lead's event count differs from the POSTs acknowledged for it"
    ordered = sorted(latencies)
    post_rate = len(post_latencies) / wall
    return {
        "requests": len(latencies),
        "statuses": statuses,
        "rps": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "post_rate": post_rate,
        "api_rate": api_rate,
        "ratio": post_rate / api_rate,
    }


def pg_database() -> tuple[str, Any] | None:
    try:
        import psycopg
        from sqlalchemy.engine import make_url
    except ImportError:
        return None
    url = make_url(PG_ADMIN)
    args = {"host": url.host or "127.0.0.1", "port": url.port or 5432, "user": url.username or "postgres"}
    name = f"saleflow_bench_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(**args, dbname=url.database or "postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None

    def drop() -> None:
        with psycopg.connect(**args, dbname=url.database or "postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    per_client = 40 if parser.parse_args().quick else 250
    print(f"{CLIENTS} clients x {per_client} requests, half event POSTs, half lead reads, {LEADS} leads")
    print(
        f"{'backend':<11} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'POST/s':>7} {'API op/s':>9} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as folder:
        backends: list[tuple[str, str, Any]] = [("sqlite", f"sqlite:///{folder}/bench.db", None)]
        pg = pg_database()
        if pg is not None:
            backends.append(("postgresql", pg[0], pg[1]))
        for name, db, drop in backends:
            try:
                r = run_backend(db, per_client)
            finally:
                if drop is not None:
                    drop()
            print(
                f"{name:<11} {r['rps']:>7.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                f"{r['post_rate']:>7.0f} {r['api_rate']:>9.0f} {r['ratio']:>6.2f}"
            )
    print("no 5xx; every lead's event count equals the POSTs acknowledged for it")


if __name__ == "__main__":
    main()
