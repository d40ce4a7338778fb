"""`appliance serve` as a user runs it: memory at idle and under load, per process, and chat
latency and 429s from 1 to 16 concurrent users in grounded mode (the mode that uses the LLM).

Starts `appliance serve` on a loopback port with a fresh data dir and the default models, waits
for /readyz, and samples the resident memory (RSS) of its process tree every 0.2 s throughout:
- idle: after start-up, nothing asked;
- ingest: `appliance ingest` of the labelled set (tests/fixtures/kb), which goes through the
  running server (its parser pool parses);
- chat: closed-loop users (each asks, waits for the answer, asks again) POSTing /api/v1/ask with
  answer_mode "grounded" (``--max-tokens`` 96, as bench/answers.py), at each of ``--users``; 429s (queue full or too slow) are counted, any
  other failure is reported.
Processes are told apart by command line: the API (the server itself), the LLM worker, the parser
pool's processes.

Writes its JSON part (see bench/common.py). `make bench` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    add_out_arg,
    machine_info,
    median,
    pct,
    process_tree,
    rss_mb,
    write_json,
)

KB = ROOT / "tests" / "fixtures" / "kb"
APPLIANCE = [sys.executable, "-m", "appliance"]


def role(pid: int, server: int) -> str:
    if pid == server:
        return "api"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "llamacpp_worker" in cmd or "inference" in cmd:
        return "llm_worker"
    if "resource_tracker" in cmd:
        return "mp_tracker"
    if "multiprocessing" in cmd or "spawn_main" in cmd:
        return "parser"
    return "other"


class Sampler:
    """RSS of the server's process tree, by role, every ``every`` seconds, tagged with a phase."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.pid, self.every, self.phase = pid, every, "start"
        self.samples: list[tuple[str, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> dict[str, float]:
        by_role: dict[str, float] = defaultdict(float)
        for p in process_tree(self.pid):
            try:
                by_role[role(p, self.pid)] += rss_mb(p)
            except OSError:
                continue  # exited between the listing and the read
        return dict(by_role)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((self.phase, self.sample()))

    def summary(self, phase: str | None = None) -> dict[str, Any]:
        rows = [s for p, s in self.samples if phase is None or p == phase]
        if not rows:
            return {}
        roles = sorted({r for s in rows for r in s})
        return {
            "total_mb": round(max(sum(s.values()) for s in rows), 1),
            "per_process_mb": {r: round(max(s.get(r, 0.0) for s in rows), 1) for r in roles},
            "samples": len(rows),
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"appliance serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling a server's start-up, not synchronising threads
    raise TimeoutError(f"appliance serve not ready within {timeout} s")


async def user(
    client: Any,
    i: int,
    n: int,
    per_user: int,
    questions: list[str],
    latencies: list[float],
    outcome: dict[str, list[str]],
) -> None:
    """One closed-loop user: asks, waits for the whole answer, asks again."""
    for j in range(per_user):
        q = questions[(i * per_user + j) % len(questions)]
        t = time.perf_counter()
        r = await client.post("/api/v1/ask", json={"question": q, "answer_mode": "grounded"})
        if r.status_code == 200:
            latencies.append((time.perf_counter() - t) * 1000)
        elif r.status_code == 429:
            outcome["refused"].append(q)
        else:
            outcome["failed"].append(f"{r.status_code} {r.text[:120]}")


async def sweep(url: str, key: str, users: list[int], per_user: int, questions: list[str]) -> list[dict]:
    import httpx

    rows = []
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        for n in users:
            latencies: list[float] = []
            outcome: dict[str, list[str]] = {"refused": [], "failed": []}
            started = time.perf_counter()
            await asyncio.gather(
                *(user(client, i, n, per_user, questions, latencies, outcome) for i in range(n))
            )
            refused, failed = len(outcome["refused"]), outcome["failed"]
            total = n * per_user
            rows.append(
                {
                    "users": n,
                    "requests": total,
                    "ok": len(latencies),
                    "p50_ms": round(median(latencies), 1),
                    "p95_ms": round(pct(latencies, 95), 1),
                    "rate_429": round(refused / total, 3),
                    "failed": failed[:5],
                    "failed_count": len(failed),
                    "answers_per_s": round(len(latencies) / (time.perf_counter() - started), 2),
                }
            )
            print(f"  users {n:2}: {rows[-1]}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--per-user", type=int, default=2, help="questions each user asks in turn")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds sampled at idle")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    # Answers are one fact; SmolLM2 rambles past it (as in bench/answers.py).
    parser.add_argument("--max-tokens", type=int, default=96, help="inference.max_tokens of the server")
    add_out_arg(parser, "serve_load")
    args = parser.parse_args()
    # A terminated bench stops its server too (the finally below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    questions = [json.loads(x)["question"] for x in (KB / "qa.jsonl").read_text().splitlines() if x.strip()]
    key = "bench-" + secrets.token_hex(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        env = {
            **os.environ,
            "APPLIANCE_DATA_DIR": str(Path(tmp) / "data"),
            "APPLIANCE_AUTH__ADMIN_KEY": key,
            "APPLIANCE_INFERENCE__MAX_TOKENS": str(args.max_tokens),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        }
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 (closed in finally)
        started = time.perf_counter()
        proc = subprocess.Popen(
            [*APPLIANCE, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp,
        )
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            wait_ready(url, proc, args.ready_timeout)
            ready_s = time.perf_counter() - started
            sampler.phase = "idle"
            time.sleep(args.idle_s)  # sampling idle memory for a while: the sampler thread works
            sampler.phase = "ingest"
            t = time.perf_counter()
            done = subprocess.run(
                [*APPLIANCE, "ingest", str(KB), "--json"], env=env, cwd=tmp, capture_output=True, text=True
            )
            if done.returncode:
                raise RuntimeError(f"appliance ingest failed: {done.stderr[-500:]}")
            ingest = {"seconds": round(time.perf_counter() - t, 2), **json.loads(done.stdout)}
            ingest.pop("failed", None)
            sampler.phase = "chat"
            rows = asyncio.run(sweep(url, key, args.users, args.per_user, questions))
        finally:
            sampler.stop()
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
            serve_log = (Path(tmp) / "serve.log").read_text(errors="replace")[-2000:]
    result = {
        "machine": machine_info(),
        "ready_s": round(ready_s, 1),
        "rss": {phase: sampler.summary(phase) for phase in ("idle", "ingest", "chat")},
        "peak": sampler.summary(),
        "ingest": ingest,
        "sweep": rows,
        "per_user": args.per_user,
        "max_tokens": args.max_tokens,
    }
    if any(r["failed_count"] for r in rows):
        result["serve_log_tail"] = serve_log
    write_json(args.out, result)
    print(f"ready in {result['ready_s']} s")
    for phase in ("idle", "ingest", "chat"):
        s = result["rss"][phase]
        print(f"RSS {phase:7} total {s.get('total_mb')} MB  {s.get('per_process_mb')}")
    print(f"{'users':>6}{'ok':>5}{'p50 ms':>10}{'p95 ms':>10}{'429':>7}{'failed':>8}")
    for r in rows:
        print(
            f"{r['users']:>6}{r['ok']:>5}{r['p50_ms']:>10}{r['p95_ms']:>10}{r['rate_429']:>7}{r['failed_count']:>8}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
