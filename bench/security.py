"""Cost of the security layer per request: principal resolution (key + user + nested groups),
quota check, usage recording, audit append and verify. Metadata DB only (SQLite), no models.

Prints a table and writes its JSON part (bench/common.py). Run with `make bench`.
"""

from __future__ import annotations

import argparse
import statistics
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
from bench.common import add_out_arg, write_json  # noqa: E402

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
    write_json(args.out, results)


if __name__ == "__main__":
    main()
