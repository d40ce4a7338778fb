"""What ``/readyz`` answers: is this replica able to serve a question now?

Checked at request time, each dependency once: the vector store answers, at least one inference
replica passes its health checks (probed by the pool every ``inference.health_interval_s``; a local
worker must also be alive), the metadata DB answers ``SELECT 1``, and Redis answers PING when
``redis.url`` is set. A result is reused for ``CACHE_S`` so a probing load balancer (or many) costs
one round of checks per interval; concurrent probes wait for the one round in progress.

The body names every check (``{"status", "checks": {name: {"ok", "ms", "error"?}}}``); an error is
the exception's type only, since /readyz answers without a key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from redis import Redis
    from sqlalchemy.engine import Engine

    from appliance.inference.pool import InferencePool
    from appliance.vectorstore.base import VectorStore

CACHE_S = 1.5


class Readiness:
    def __init__(
        self,
        store: VectorStore,
        pool: InferencePool,
        engine: Engine,
        redis: Redis | None = None,
        cache_s: float = CACHE_S,
    ) -> None:
        checks: dict[str, Callable[[], str | None]] = {
            "store": lambda: _quiet(store.collections()),
            "inference": lambda: _inference(pool),
            "database": lambda: _database(engine),
        }
        if redis is not None:
            checks["redis"] = lambda: _quiet(redis.ping())
        self._checks = checks
        self.cache_s = cache_s
        self._last: tuple[float, dict[str, Any]] | None = None
        self._mu = threading.Lock()

    def check(self) -> dict[str, Any]:
        """``{"status": "ready" | "not_ready", "checks": {...}}``, at most ``cache_s`` old."""
        with self._mu:
            if self._last is not None and time.monotonic() - self._last[0] < self.cache_s:
                return self._last[1]
            results = {name: _run(check) for name, check in self._checks.items()}
            ok = all(r["ok"] for r in results.values())
            report = {"status": "ready" if ok else "not_ready", "checks": results}
            self._last = (time.monotonic(), report)
            return report


def _run(check: Callable[[], str | None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        problem = check()
    except Exception as exc:  # noqa: BLE001 - any failure is "not ready", named by its type
        problem = type(exc).__name__
    out: dict[str, Any] = {"ok": problem is None, "ms": round((time.perf_counter() - started) * 1000, 1)}
    if problem is not None:
        out["error"] = problem
    return out


def _quiet(_: object) -> None:
    return None


def _database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _inference(pool: InferencePool) -> str | None:
    healthy = pool.healthy_replicas()
    if any(n for n, _ in healthy.values()):
        return None
    return "no healthy replica: " + ", ".join(f"{m} 0 of {total}" for m, (_, total) in healthy.items())
