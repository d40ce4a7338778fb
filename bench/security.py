"""The security layer: what it costs per request, and whether its promises hold on a live server.

1. Cost: principal resolution (key + user + nested groups), quota check, usage recording, audit
   append and verify. Metadata DB only (SQLite), no models.
2. Probes (issue 15), against a live `appliance serve` this script starts on a free loopback
   port: endless chunked bodies with and without a key (401/413, the server's RSS and temp
   folder stay flat), a declared body over the cap, a collection-scoped admin key on admin
   routes, a password change without the old password, /docs without a key, and the existence
   oracles (a taken collection name, a model naming an unreadable collection). Prints a table
   (probe, expected, got) and saves it as bench/results/security-<date>.json. `--no-probes` skips.

Prints tables and writes its JSON part (bench/common.py). Run with `make bench`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.audit import AuditEvent, AuditLog  # noqa: E402
from appliance.db import make_engine  # noqa: E402
from appliance.metering import Metering  # noqa: E402
from appliance.security.auth import KeyStore, issue_key, resolve_principal  # noqa: E402
from appliance.security.identity import IdentityStore  # noqa: E402
from bench.common import RESULTS, add_out_arg, machine_info, write_json  # noqa: E402
from bench.probes import endless_chunked  # noqa: E402

DEPTH = 6  # nesting levels of departments
USERS = 200
AUDIT_RECORDS = 2000


def timed(fn: Callable[[], Any], n: int) -> dict[str, float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "n": n,
        "p50_ms": round(statistics.median(samples), 3),
        "p95_ms": round(samples[int(n * 0.95) - 1], 3),
        "per_s": round(1000 / statistics.mean(samples), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_out_arg(parser, "security")
    parser.add_argument("--no-probes", action="store_true", help="Only the cost figures; no live server.")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(Path(tmp) / "bench.db")
        ids, keys = IdentityStore(engine), KeyStore(engine)
        parent = None
        for level in range(DEPTH):
            for branch in range(5):
                ids.add_group(f"g{level}-{branch}", parent=parent)
            parent = f"g{level}-0"
        for i in range(USERS):
            ids.add_user(f"user{i}", "employee", [f"g{DEPTH - 1}-{i % 5}"])
        key = issue_key(keys, ids, "user0").key
        principal = resolve_principal(keys, ids, key)
        results["resolve_principal"] = timed(lambda: resolve_principal(keys, ids, key), 500)
        results["resolve_principal"]["groups"] = len(principal.groups)
        metering = Metering(engine, default_tokens_per_day=10**9, default_rpm=10**6)
        results["check_quota"] = timed(lambda: metering.check_quota(principal), 500)
        results["record_usage"] = timed(lambda: metering.record_usage(principal, 500, 100), 300)
        audit = AuditLog(Path(tmp) / "audit" / "audit.jsonl", checkpoint_every=100)
        event = AuditEvent("user0", "search", "default", {"question": "q" * 80, "chunk_ids": ["x" * 36] * 5})
        results["audit_append"] = timed(lambda: audit.append(event), AUDIT_RECORDS)
        started = time.perf_counter()
        verdict = audit.verify()
        elapsed = time.perf_counter() - started
        assert verdict.ok
        results["audit_verify"] = {
            "records": verdict.records,
            "seconds": round(elapsed, 3),
            "records_per_s": round(verdict.records / elapsed),
        }
    print(f"{'operation':22} {'p50 ms':>9} {'p95 ms':>9} {'per s':>10}")
    for name, row in results.items():
        if "p50_ms" in row:
            print(f"{name:22} {row['p50_ms']:9.3f} {row['p95_ms']:9.3f} {row['per_s']:10.1f}")
    v = results["audit_verify"]
    print(f"audit verify: {v['records']} records in {v['seconds']} s ({v['records_per_s']}/s)")
    print(f"principal with {results['resolve_principal']['groups']} groups ({DEPTH} nesting levels)")
    if not args.no_probes:
        results["probes"] = run_probes()
    write_json(args.out, results)


# -- probes against a live server -------------------------------------------------------------------

MIB = 2**20
ENDLESS_BYTES = 64 * MIB  # what a probe sends at most before it gives up waiting for an answer


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spooled_bytes(folder: Path, pid: int) -> int:
    """Bytes in files under ``folder`` plus unlinked ones the server still holds open there."""
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir() if fds.is_dir() else ():
        try:
            if os.readlink(fd).startswith(str(folder)):
                total += fd.stat().st_size
        except OSError:
            continue
    return total


class _Live:
    """`appliance serve` on a loopback port with a throwaway data dir and temp folder."""

    def __init__(self, root: Path) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.spool = root / "spool"
        self.spool.mkdir()
        self.admin_key = "kb-bench-" + secrets.token_hex(12)
        env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(root / "data"),
            "APPLIANCE_AUTH__ADMIN_KEY": self.admin_key,
            "APPLIANCE_LOG_LEVEL": "WARNING",
            "APPLIANCE_INGESTION__MAX_FILE_MB": "4",
            "APPLIANCE_SERVER__MAX_JSON_MB": "1",
            "TMPDIR": str(self.spool),
        }
        self.log = root / "serve.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(self.port)],
            env=env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - lives as long as the server
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"appliance serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("appliance serve was not ready in 600 s")
        self.http = httpx.Client(base_url=self.url, timeout=120)

    def as_(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_probes() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(probe: str, expected: str, got: object, ok: bool) -> None:
        rows.append({"probe": probe, "expected": expected, "got": str(got), "ok": bool(ok)})

    with tempfile.TemporaryDirectory() as tmp:
        live = _Live(Path(tmp))
        try:
            _probe_bounds(live, row)
            _probe_scopes(live, row)
        finally:
            live.stop()
    print(f"\n{'probe':58} {'expected':24} {'got':24} ok")
    for r in rows:
        print(f"{r['probe'][:58]:58} {r['expected'][:24]:24} {r['got'][:24]:24} {'yes' if r['ok'] else 'NO'}")
    day = dt.date.today().isoformat()
    path = write_json(
        RESULTS / f"security-{day}.json", {"date": day, "machine": machine_info(), "probes": rows}
    )
    print(f"probes: {sum(r['ok'] for r in rows)}/{len(rows)} as expected; table in {path}")
    return rows


def _probe_bounds(live: _Live, row: Any) -> None:
    admin = live.as_(live.admin_key)
    r = live.http.post("/api/v1/users", json={"name": "erin", "role": "employee"}, headers=admin)
    erin = (
        live.http.post("/api/v1/keys", json={"user": "erin"}, headers=admin).json()["key"]
        if r.is_success
        else None
    )
    rss = live.rss()
    for path, ctype in (
        ("/api/v1/documents", "multipart/form-data; boundary=x"),
        ("/v1/chat/completions", "application/json"),
        ("/v1/embeddings", "application/json"),
    ):
        got = endless_chunked("127.0.0.1", live.port, path, {"Content-Type": ctype}, max_bytes=ENDLESS_BYTES)
        row(f"endless chunked body, no key: POST {path}", "401", got.status, got.status == 401)
    got = endless_chunked(
        "127.0.0.1",
        live.port,
        "/v1/embeddings",
        {"Content-Type": "application/json", **live.as_(erin)},
        max_bytes=ENDLESS_BYTES,
        prefix=b'{"input": "',
    )
    row(
        "endless chunked body, employee key: POST /v1/embeddings",
        "413 (server.max_json_mb)",
        got.status,
        got.status == 413,
    )
    got = endless_chunked(
        "127.0.0.1",
        live.port,
        "/api/v1/documents",
        {"Content-Type": "multipart/form-data; boundary=x", **admin},
        max_bytes=ENDLESS_BYTES,
        prefix=b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n',
    )
    row(
        "endless chunked upload, admin key: POST /api/v1/documents",
        "413 (ingestion.max_file_mb)",
        got.status,
        got.status == 413,
    )
    got = _declared("127.0.0.1", live.port, "/api/v1/search", 10 * 2**30)
    row("declared 10 GiB body, no key: POST /api/v1/search", "413 or 401, unread", got, got in (401, 413))
    grown = (live.rss() - rss) / MIB
    row(
        f"server RSS growth over {5 * ENDLESS_BYTES // MIB} MiB of probes",
        "< 64 MiB",
        f"{grown:.1f} MiB",
        grown < 64,
    )
    spooled = _spooled_bytes(live.spool, live.proc.pid)
    row("bytes left in the server's temp folder", "0", spooled, spooled == 0)
    if erin:
        r = live.http.post("/v1/embeddings", json={"input": "x" * 40_000}, headers=live.as_(erin))
        row("embedding input over 32000 characters", "400", r.status_code, r.status_code == 400)
        r = live.http.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x" * 40_000}]},
            headers=live.as_(erin),
        )
        row("chat message over 32000 characters", "422", r.status_code, r.status_code == 422)


def _declared(host: str, port: int, path: str, length: int) -> int | None:
    """A request that declares ``length`` body bytes and sends none: the answer must not wait."""
    import socket

    with socket.create_connection((host, port), timeout=30) as sock:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        sock.sendall(head.encode())
        try:
            answer = sock.recv(65536)
        except OSError:
            return None
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None


def _probe_scopes(live: _Live, row: Any) -> None:
    """sec-auth's probes that are plain HTTP (issue 15 items 1, 2, 14, 17)."""
    http, admin = live.http, live.as_(live.admin_key)
    http.post("/api/v1/groups", json={"name": "hr-team"}, headers=admin)
    http.post("/api/v1/collections", json={"name": "hr", "default_acl": ["group:hr-team"]}, headers=admin)
    http.post("/api/v1/users", json={"name": "carl", "role": "admin"}, headers=admin)
    scoped = (
        http.post("/api/v1/keys", json={"user": "carl", "collections": ["hr"]}, headers=admin)
        .json()
        .get("key")
    )
    for method, path, body in (
        ("GET", "/api/v1/users", None),
        ("POST", "/api/v1/keys", {"user": "carl"}),
        ("PATCH", "/api/v1/users/erin", {"role": "admin"}),
        ("PUT", "/api/v1/quotas", {"subject": "user:carl", "tokens_per_day": 10}),
    ):
        r = http.request(method, path, json=body, headers=live.as_(scoped))
        ok = r.status_code in (403, 404)
        row(f"admin key scoped to one collection: {method} {path}", "403 or 404", r.status_code, ok)
    # Routes every caller may use answer such a key for its own user only.
    r = http.get("/api/v1/keys", headers=live.as_(scoped))
    users = sorted({k["user"] for k in r.json().get("data", [])}) if r.is_success else r.status_code
    row(
        "admin key scoped to one collection: GET /api/v1/keys",
        "403, or own keys",
        users,
        users in (403, ["carl"]),
    )
    r = http.get("/api/v1/usage", headers=live.as_(scoped))
    subjects = sorted({u["subject"] for u in r.json().get("data", [])}) if r.is_success else []
    own = r.is_success and all(x == "user:carl" or x.startswith("key:") for x in subjects)
    row(
        "admin key scoped to one collection: GET /api/v1/usage",
        "403, or own usage",
        subjects or r.status_code,
        r.status_code == 403 or own,
    )
    http.post(
        "/api/v1/users", json={"name": "pat", "role": "employee", "password": "pat-password-1"}, headers=admin
    )
    pat = http.post("/api/v1/keys", json={"user": "pat"}, headers=admin).json().get("key")
    r = http.patch("/api/v1/users/pat", json={"password": "pat-password-2"}, headers=live.as_(pat))
    row(
        "password change with the user's key, no old password",
        "400/403/422",
        r.status_code,
        r.status_code in (400, 403, 422),
    )
    r = http.get("/docs")
    row("/docs without a key", "401 or 404", r.status_code, r.status_code in (401, 404))
    r1 = http.post(
        "/v1/chat/completions",
        json={"model": "hr", "messages": [{"role": "user", "content": "hi"}]},
        headers=live.as_(pat),
    )
    r2 = http.post(
        "/v1/chat/completions",
        json={"model": "no-such-kb", "messages": [{"role": "user", "content": "hi"}]},
        headers=live.as_(pat),
    )
    same = (r1.status_code, _code(r1)) == (r2.status_code, _code(r2))
    row(
        "chat model = unreadable collection vs unknown name",
        "same answer",
        f"{r1.status_code} vs {r2.status_code}",
        same,
    )
    http.post("/api/v1/groups", json={"name": "eng"}, headers=admin)
    http.post("/api/v1/users", json={"name": "cora", "role": "curator", "groups": ["eng"]}, headers=admin)
    cora = live.as_(http.post("/api/v1/keys", json={"user": "cora"}, headers=admin).json().get("key"))
    r = http.post("/api/v1/collections", json={"name": "hr"}, headers=cora)
    row(
        "curator creates a taken collection name it cannot see",
        "not 409",
        r.status_code,
        r.status_code != 409,
    )


def _code(response: Any) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


if __name__ == "__main__":
    main()
