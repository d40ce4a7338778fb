"""Scale mode's shared state on a real redis-server (the session fixture ``redis``), and its
one-process twin: the capped lease counters behind admission places and token reservations, UI
session storage, and quotas metered by two ``Metering`` objects (two API replicas) on one DB.

Two objects built on the same Redis database stand for two replicas: nothing but Redis connects
them, exactly as two processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.audit import open_audit_log
from appliance.db import make_engine
from appliance.domain import Overloaded, Principal, Unavailable
from appliance.metering import Metering
from appliance.security.sessions import MemorySessions, RedisSessions, SessionRecord, SessionStore
from appliance.security.throttle import DeniedAudit, LoginThrottle
from appliance.settings import AuditSettings
from appliance.sharedstate import CapReached, Leases, LocalLeases, RedisLeases, connect
from tests.conftest import Redis, free_port

T = TypeVar("T")


def wait_until(check: Callable[[], bool], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.05)  # polling until the deadline


IN_PROCESS_OR_REDIS = ["local", pytest.param("redis", marks=pytest.mark.services)]


def two_replicas(
    request: pytest.FixtureRequest, local: Callable[[], T], on_redis: Callable[[Any], T]
) -> tuple[T, T]:
    """Two replicas' view of one kind of shared state: one object in-process (the same object for
    both), or two objects on one fresh Redis database."""
    if request.param == "local":
        shared = local()
        return shared, shared
    url = request.getfixturevalue("redis").fresh_url()
    return on_redis(connect(url)), on_redis(connect(url))


@pytest.fixture(params=IN_PROCESS_OR_REDIS)
def replicas(request: pytest.FixtureRequest) -> tuple[Leases, Leases]:
    return two_replicas(request, LocalLeases, RedisLeases)


def test_leases_hold_a_cap_across_replicas_and_come_back(replicas: tuple[Leases, Leases]) -> None:
    a, b = replicas
    caps = [("queue:smol", 3), ("queue:smol:alice", 2)]
    first = a.acquire(caps)
    second = b.acquire(caps)  # another replica: the same counters
    with pytest.raises(CapReached) as refused:
        a.acquire(caps)
    assert (refused.value.key, refused.value.held, refused.value.cap) == ("queue:smol:alice", 2, 2)
    bob = b.acquire([("queue:smol", 3), ("queue:smol:bob", 2)])  # alice's cap is not bob's
    with pytest.raises(CapReached) as full:
        a.acquire([("queue:smol", 3), ("queue:smol:carol", 2)])
    assert full.value.key == "queue:smol" and full.value.held == 3
    # Refused acquisitions took nothing, on no counter.
    assert (a.held("queue:smol"), b.held("queue:smol:alice"), a.held("queue:smol:carol")) == (3, 2, 0)
    b.release(first)  # released by the other replica than the one that took it
    b.release(first)  # twice is harmless
    a.release(None)
    assert a.held("queue:smol:alice") == 1 and b.held("queue:smol") == 2
    a.acquire(caps)
    for held in (second, bob):
        a.release(held)
    assert a.held("queue:smol") == 1


def test_weights_count_against_a_cap(replicas: tuple[Leases, Leases]) -> None:
    a, b = replicas
    held = a.acquire([("tokens", 1000)], weight=600)
    with pytest.raises(CapReached) as refused:
        b.acquire([("tokens", 1000)], weight=401)
    assert refused.value.held == 600
    b.acquire([("tokens", 1000)], weight=400)
    a.release(held)
    assert b.held("tokens") == 400


def test_a_lease_of_a_replica_that_died_runs_out(replicas: tuple[Leases, Leases]) -> None:
    """Crash safety: a holder that never releases (kill -9) frees its place when the TTL ends."""
    a, b = replicas
    a.acquire([("queue:smol:alice", 1)], ttl_s=0.5)  # never released
    with pytest.raises(CapReached):
        b.acquire([("queue:smol:alice", 1)])
    wait_until(lambda: b.held("queue:smol:alice") == 0)
    b.acquire([("queue:smol:alice", 1)])


@pytest.mark.services
def test_concurrent_acquisitions_never_pass_the_cap(redis: Redis) -> None:
    url = redis.fresh_url()
    replicas = [RedisLeases(connect(url)) for _ in range(4)]

    def take(i: int) -> bool:
        try:
            replicas[i % 4].acquire([("queue:smol", 5)])
            return True
        except CapReached:
            return False

    with ThreadPoolExecutor(8) as pool:
        taken = sum(pool.map(take, range(40)))
    assert taken == 5 and replicas[0].held("queue:smol") == 5


def test_redis_going_away_is_a_503_not_a_pass() -> None:
    leases = RedisLeases(connect(f"redis://127.0.0.1:{free_port()}/0"))  # nobody listens there
    with pytest.raises(Unavailable, match="Redis is unreachable"):
        leases.acquire([("queue:smol", 5)])
    leases.release(None)


# -- UI sessions ----------------------------------------------------------------------------------


@pytest.fixture(params=IN_PROCESS_OR_REDIS)
def session_stores(request: pytest.FixtureRequest) -> tuple[SessionStore, SessionStore]:
    return two_replicas(request, MemorySessions, lambda client: RedisSessions(client, "/"))


def test_a_session_stored_by_one_replica_is_read_and_ended_by_another(
    session_stores: tuple[SessionStore, SessionStore],
) -> None:
    a, b = session_stores
    record = SessionRecord("alice", 7, 1_700_000_000.5, "stamp")
    a.put("ref1", record, 3600)
    assert b.get("ref1") == record
    assert b.records() == {"ref1": record}
    assert b.delete("ref1") and not a.delete("ref1")
    assert a.get("ref1") is None
    a.put("short", record, 1)
    wait_until(lambda: b.get("short") is None)


@pytest.mark.services
def test_chat_and_console_sessions_are_kept_apart(redis: Redis) -> None:
    client = connect(redis.fresh_url())
    chat, console = RedisSessions(client, "/"), RedisSessions(client, "/admin")
    chat.put("ref", SessionRecord("alice", None, 1.0, None), 60)
    assert console.get("ref") is None and console.records() == {} and list(chat.records()) == ["ref"]


# -- limits and quotas over two replicas -----------------------------------------------------------


@pytest.mark.services
def test_sign_in_throttle_counts_attempts_on_every_replica(redis: Redis) -> None:
    url = redis.fresh_url()
    one, two = LoginThrottle("3/minute", url), LoginThrottle("3/minute", url)
    for throttle in (one, two, one):
        assert throttle.allowed("alice", "10.0.0.1")
        throttle.failed("alice", "10.0.0.1")
    assert not two.allowed("alice", "10.0.0.9")  # per user name, whatever the address
    assert not one.allowed("bob", "10.0.0.1")  # per address, whatever the name
    assert two.allowed("bob", "10.0.0.2")


ALICE = Principal("alice", "employee", ("eng",))


@pytest.mark.services
def test_quotas_hold_across_two_replicas(redis: Redis, db_url: str) -> None:
    """Per-minute windows and token reservations of two Metering objects on one DB and one Redis."""
    url = redis.fresh_url()
    engine = make_engine(db_url)
    one = Metering(engine, leases=RedisLeases(connect(url)), windows_storage=url)
    two = Metering(engine, leases=RedisLeases(connect(url)), windows_storage=url)
    one.set_quota("user:alice", tokens_per_day=1000, requests_per_minute=3)
    one.check_quota(ALICE)
    two.check_quota(ALICE)
    one.check_quota(ALICE)
    with pytest.raises(Overloaded) as err:
        two.check_quota(ALICE)
    assert "request rate quota of user:alice" in err.value.message and 1 <= err.value.retry_after <= 60

    one.record_usage(ALICE, 100, 0)
    first = one.reserve(ALICE, 600)
    with pytest.raises(Overloaded, match="600 held"):
        two.reserve(ALICE, 301)  # 100 spent + 600 held by the other replica + 301 > 1000
    second = two.reserve(ALICE, 300)
    one.release(second)  # either replica gives a reservation back
    two.release(first)
    assert two.reserve(ALICE, 900) is not None


@pytest.mark.services
def test_concurrent_reservations_on_two_replicas_never_overshoot(redis: Redis, db_url: str) -> None:
    url = redis.fresh_url()
    engine = make_engine(db_url)
    replicas = [Metering(engine, leases=RedisLeases(connect(url)), windows_storage=url) for _ in range(2)]
    replicas[0].set_quota("group:eng", tokens_per_day=1000)

    def reserve(i: int) -> bool:
        try:
            return replicas[i % 2].reserve(ALICE, 100) is not None
        except Overloaded:
            return False

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(reserve, range(30))) == 10


@pytest.mark.services
def test_denied_audit_bounds_hold_across_replicas(redis: Redis, tmp_path: Path) -> None:
    """A flood of bad keys spread over replicas writes no more auth.denied records per client
    than the bound, counted on both (each replica keeps its own audit chain)."""
    url = redis.fresh_url()
    logs = [open_audit_log(AuditSettings(), tmp_path / name) for name in ("one", "two")]
    replicas = [DeniedAudit(log, "2/minute", "100/minute", url) for log in logs]
    written = [replicas[i % 2].record("anonymous", "/api/v1/search", "10.0.0.1", {}) for i in range(6)]
    assert written == [True, True, False, False, False, False]
    assert replicas[1].record("anonymous", "/api/v1/search", "10.0.0.2", {})  # another client
