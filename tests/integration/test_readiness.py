"""/readyz's checks (appliance/readiness.py) on real parts: an Edge shard, a SQLite DB, a Redis
server, and a pool whose only model server is a remote one nobody answers for."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from appliance.db import make_engine
from appliance.inference.backends.remote import RemoteBackend
from appliance.inference.pool import InferencePool
from appliance.readiness import Readiness
from appliance.sharedstate import connect
from appliance.vectorstore.edge import EdgeVectorStore
from tests.conftest import Redis, free_port


def test_a_pool_with_no_healthy_replica_is_not_ready(tmp_path: Path) -> None:
    gone = RemoteBackend("far", f"http://127.0.0.1:{free_port()}/v1", None)  # nobody listens there
    pool = InferencePool([gone], max_queue=1, queue_timeout_s=1, health_interval_s=0.2)
    store = EdgeVectorStore(tmp_path / "qdrant")
    pool.start()  # the health checker probes at once
    try:
        readiness = Readiness(store, pool, make_engine(tmp_path / "kb.db"), cache_s=0.0)
        deadline = time.monotonic() + 30
        while (report := readiness.check())["status"] != "not_ready":
            assert time.monotonic() < deadline, report
            time.sleep(0.05)  # polling until the first probe has failed
        checks = report["checks"]
        assert set(checks) == {"store", "inference", "database"}  # no Redis configured, no check
        assert checks["store"]["ok"] and checks["database"]["ok"]
        assert not checks["inference"]["ok"] and "far 0 of 1" in checks["inference"]["error"]
    finally:
        pool.close()
        store.close()


@pytest.mark.services
def test_redis_is_checked_when_configured_and_results_are_cached(tmp_path: Path, redis: Redis) -> None:
    store = EdgeVectorStore(tmp_path / "qdrant")
    pool = InferencePool([RemoteBackend("far", "http://127.0.0.1:1/v1", None)], 1, 1.0)
    try:
        live = Readiness(store, pool, make_engine(tmp_path / "kb.db"), connect(redis.url(0)), cache_s=60)
        first = live.check()
        assert first["status"] == "ready" and first["checks"]["redis"]["ok"]  # never probed: counts as up
        assert live.check() is first  # within cache_s: the same report, no new round of checks
        down = Readiness(
            store, pool, make_engine(tmp_path / "kb.db"), connect(f"redis://127.0.0.1:{free_port()}/0")
        )
        report = down.check()
        assert report["status"] == "not_ready" and report["checks"]["redis"]["error"] == "ConnectionError"
    finally:
        store.close()
