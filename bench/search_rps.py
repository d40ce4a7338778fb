"""Requests per second one `appliance serve` answers on POST /api/v1/search, the figure that tells
when to add API replicas (docs/scaling.md, "Stateless replicas").

Starts `appliance serve` on a loopback port with a fresh data dir, ingests the labelled set
(tests/fixtures/kb) through it, then runs closed-loop clients (each searches, waits for the answer,
searches again) as an employee whose key has a per-minute quota (so the quota's window is counted
on every request, as in production), at each of ``--clients`` for ``--seconds``. With
``--redis URL`` (and ``--database URL``) the same server runs in scale mode: sessions, limits and
quota windows in Redis, metadata in PostgreSQL, to show what the shared state costs.

    python bench/search_rps.py [--clients 1 4 8] [--seconds 8] [--redis redis://…] [--database postgresql://…]

Prints one JSON document (machine, date, requests/s and latency per concurrency). Not part of
`make bench`: a short loop for the scaling page.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine_info, pct  # noqa: E402
from bench.serve_load import free_port, wait_ready  # noqa: E402

KB = ROOT / "tests" / "fixtures" / "kb"
QUERIES = [
    "how many days of annual leave",
    "VPN access from home",
    "expense report deadline",
    "password rotation policy",
    "who approves purchases",
    "parental leave",
]


def loop(url: str, key: str, until: float, latencies: list[float], errors: list[int]) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        i = 0
        while time.monotonic() < until:
            started = time.perf_counter()
            r = client.post(f"{url}/api/v1/search", json={"query": QUERIES[i % len(QUERIES)], "k": 5})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(r.status_code)
            i += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--redis", default=None, help="redis.url: scale mode's shared state")
    parser.add_argument("--database", default=None, help="database.url (PostgreSQL)")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="kb-rps-"))
    admin = "kb-bench-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env |= {"APPLIANCE_DATA_DIR": str(data), "APPLIANCE_AUTH__ADMIN_KEY": admin, "PYTHONPATH": str(ROOT)}
    env |= {"APPLIANCE_LOG_LEVEL": "WARNING"}
    if args.redis:
        env["APPLIANCE_REDIS__URL"] = args.redis
    if args.database:
        env["APPLIANCE_DATABASE__URL"] = args.database
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(data / "serve.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        wait_ready(url, proc, 300)
        subprocess.run(
            [sys.executable, "-m", "appliance", "ingest", str(KB), "--json"],
            env=env,
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        headers = {"Authorization": f"Bearer {admin}"}
        httpx.post(f"{url}/api/v1/users", json={"name": "bench"}, headers=headers).raise_for_status()
        key = httpx.post(f"{url}/api/v1/keys", json={"user": "bench"}, headers=headers)
        key.raise_for_status()
        quota = {"subject": "user:bench", "requests_per_minute": 1_000_000}
        httpx.put(f"{url}/api/v1/quotas", json=quota, headers=headers).raise_for_status()
        rows: list[dict[str, Any]] = []
        for clients in args.clients:
            latencies: list[float] = []
            errors: list[int] = []
            until = time.monotonic() + args.seconds
            threads = [
                threading.Thread(target=loop, args=(url, key.json()["key"], until, latencies, errors))
                for _ in range(clients)
            ]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            rows.append(
                {
                    "clients": clients,
                    "requests_per_s": round(len(latencies) / elapsed, 1),
                    "p50_ms": round(pct(latencies, 50) * 1000, 1),
                    "p95_ms": round(pct(latencies, 95) * 1000, 1),
                    "errors": errors[:10],
                }
            )
        print(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": machine_info(),
                    "redis": bool(args.redis),
                    "database": "postgresql" if args.database else "sqlite",
                    "search": rows,
                },
                indent=2,
            )
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
