"""The pool in front of real llama.cpp worker processes (SmolLM2-135M from the installed package).

One worker is shared by the module; each test builds its own small pool around it. Workers listen
on loopback TCP here so the remote backend can be tested against the same OpenAI endpoint.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from appliance.domain import Overloaded, Unavailable
from appliance.inference.backends.llamacpp import LlamaCppBackend
from appliance.inference.backends.remote import RemoteBackend
from appliance.inference.base import GenerationParams
from appliance.inference.pool import HUNG_AFTER, DeadlineExceeded, InferencePool
from appliance.models import resolve_llm
from tests.conftest import free_port

pytestmark = pytest.mark.slow

SYSTEM = "You are a helpful assistant. Answer briefly."
SHORT = GenerationParams(max_tokens=4, temperature=0.0)
LONG = GenerationParams(max_tokens=400, temperature=0.0)


def messages(question: str = "Name three colours.") -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]


@pytest.fixture(scope="module")
def worker() -> Iterator[LlamaCppBackend]:
    entry = resolve_llm("default", "smol")
    backend = LlamaCppBackend(
        "smol",
        entry.path,
        1024,
        2,
        256,
        warm_messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": ""}],
        tcp=True,
    )
    backend.start()
    try:
        yield backend
    finally:
        backend.close()


def make_pool(worker: LlamaCppBackend, **kw: Any) -> InferencePool:
    args: dict[str, Any] = {"max_queue": 4, "queue_timeout_s": 60.0} | kw
    return InferencePool([worker], **args)


async def collect(pool: InferencePool, params: GenerationParams = SHORT, **kw: Any) -> str:
    return "".join([d.content async for d in pool.chat(messages(), params, **kw)])


def worker_health(worker: LlamaCppBackend) -> dict[str, Any]:
    r = httpx.get(
        f"http://127.0.0.1:{worker.process.port}/health", headers={"Authorization": f"Bearer {worker.token}"}
    )
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


def wait_until(check: Any, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met before the deadline")


async def until(check: Any, deadline_s: float = 60.0) -> None:
    """Poll ``check`` from inside the event loop, letting the pool's tasks run, until the deadline."""
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)  # polling the pool's state until the deadline


def test_answers_and_records_metrics(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker)
    text = asyncio.run(collect(pool))
    assert text.strip()
    metrics = pool.metrics.render().decode()
    assert 'appliance_time_to_first_token_seconds_count{model="smol"} 1.0' in metrics
    assert 'appliance_inference_requests_total{model="smol",outcome="ok"} 1.0' in metrics
    assert pool.stats() == {"outstanding": 0, "waiting": 0}


def test_system_prompt_prefix_is_not_prefilled_again(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker)
    asyncio.run(collect(pool))
    warm = worker_health(worker)["warm_tokens"]
    assert warm > 10 and worker_health(worker)["reused_tokens"] >= warm - 8
    # Another system prompt takes over the KV cache; the next RAG-shaped request gets the prefix
    # back from the worker's snapshot instead of evaluating it again.
    other = [{"role": "system", "content": "Reply in French."}, {"role": "user", "content": "Hi"}]
    asyncio.run(_drain(pool.chat(other, SHORT)))
    restores = worker_health(worker)["prefix_restores"]
    asyncio.run(collect(pool))
    health = worker_health(worker)
    assert health["prefix_restores"] == restores + 1 and health["reused_tokens"] >= warm - 8


def test_one_thread_calls_llama_cpp(worker: LlamaCppBackend) -> None:
    """Loading, warming and every answer run on the worker's one llama thread: a second calling
    thread gives llama.cpp a second OpenMP team, and libgomp then sleeps between tokens instead of
    spinning, and decode falls well behind in-process llama.cpp."""
    pool = make_pool(worker)
    for _ in range(3):
        asyncio.run(collect(pool))
    health = worker_health(worker)
    assert health["served"] >= 3 and health["warm_tokens"] > 10
    assert health["llama_threads"] == 1


async def _drain(stream: Any) -> None:
    async for _ in stream:
        pass


def test_load_beyond_capacity_is_refused_with_429_and_nothing_else(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker, max_queue=2)

    async def burst() -> list[Any]:
        return await asyncio.gather(*(collect(pool, user=f"u{i}") for i in range(8)), return_exceptions=True)

    async def reserve_while_full() -> Any:
        tasks = [asyncio.create_task(collect(pool, LONG)) for _ in range(3)]
        await until(lambda: pool.stats() == {"outstanding": 1, "waiting": 2})
        try:
            await pool.reserve()
        except Overloaded as exc:
            return exc
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    refused_reservation = asyncio.run(reserve_while_full())
    assert isinstance(refused_reservation, Overloaded) and refused_reservation.retry_after >= 1
    assert pool.stats() == {"outstanding": 0, "waiting": 0}
    results = asyncio.run(burst())
    refused = [r for r in results if isinstance(r, Overloaded)]
    answered = [r for r in results if isinstance(r, str)]
    assert len(answered) + len(refused) == 8, [r for r in results if isinstance(r, BaseException)]
    # One slot plus a queue of two: three answered, five refused at once with a Retry-After.
    assert (len(answered), len(refused)) == (3, 5)
    assert all(r.status == 429 and r.retry_after >= 1 for r in refused)
    assert pool.stats() == {"outstanding": 0, "waiting": 0}
    assert (
        'appliance_inference_errors_total{kind="queue_full",model="smol"} 6.0'  # the 5 + the reservation
        in pool.metrics.render().decode()
    )


def test_queue_wait_is_bounded(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker, queue_timeout_s=0.2)

    async def run() -> list[Any]:
        long = asyncio.create_task(collect(pool, LONG))
        await until(lambda: pool.stats()["outstanding"] == 1)  # the long request has the slot
        try:
            return await asyncio.gather(collect(pool), return_exceptions=True)
        finally:
            long.cancel()
            await asyncio.gather(long, return_exceptions=True)

    (result,) = asyncio.run(run())
    assert isinstance(result, Overloaded) and "stayed busy" in result.message
    assert pool.stats() == {"outstanding": 0, "waiting": 0}


def test_fairness_one_user_cannot_starve_another(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker, max_queue=10)
    order: list[str] = []

    async def one(user: str) -> None:
        await collect(pool, user=user)
        order.append(user)

    def entered() -> int:  # alice's requests that hold the slot, wait, or are done
        stats = pool.stats()
        return stats["outstanding"] + stats["waiting"] + len(order)

    async def run() -> None:
        tasks = [asyncio.create_task(one("alice")) for _ in range(5)]
        await until(lambda: entered() == 5)  # all of alice's burst is in before bob comes
        tasks.append(asyncio.create_task(one("bob")))
        await asyncio.gather(*tasks)

    asyncio.run(run())
    # FIFO would serve bob sixth; per-user round-robin serves him right after alice's second.
    assert order.index("bob") <= 2, order


def test_disconnect_cancels_generation_and_frees_the_slot(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker)
    before = worker_health(worker)["cancelled"]

    async def run() -> None:
        started = asyncio.Event()

        async def consume() -> None:
            async for delta in pool.chat(messages("Write a long story about a dragon."), LONG):
                if delta.content:
                    started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()  # what the server does when the HTTP client goes away
        await asyncio.gather(task, return_exceptions=True)
        assert pool.stats() == {"outstanding": 0, "waiting": 0}

    asyncio.run(run())
    # The worker stopped generating (it did not run on to 400 tokens) and is free again.
    wait_until(lambda: worker_health(worker)["cancelled"] == before + 1 and not worker_health(worker)["busy"])
    assert asyncio.run(collect(pool)).strip()
    assert 'outcome="cancelled"} 1.0' in pool.metrics.render().decode()


def test_deadline_stops_a_long_generation(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker, request_timeout_s=0.3)
    # A story, not "three colours": a short answer can be done inside 0.3 s on a fast machine.
    with pytest.raises(DeadlineExceeded) as info:
        asyncio.run(_drain(pool.chat(messages("Write a long story about a dragon."), LONG)))
    assert info.value.status == 504
    assert pool.stats() == {"outstanding": 0, "waiting": 0}


def test_kill_9_mid_stream_gives_a_clean_error_and_the_worker_comes_back(worker: LlamaCppBackend) -> None:
    pool = make_pool(worker)
    old_pid = worker.process.pid
    assert old_pid is not None

    async def run() -> None:
        async for delta in pool.chat(messages("Write a long story about a dragon."), LONG):
            if delta.content:
                os.kill(old_pid, signal.SIGKILL)

    with pytest.raises(Unavailable) as info:
        asyncio.run(run())
    assert info.value.status == 503 and "crashed" in info.value.message
    assert pool.stats() == {"outstanding": 0, "waiting": 0}
    wait_until(lambda: worker.process.alive() and worker.process.pid != old_pid)
    assert asyncio.run(collect(pool)).strip()
    pool.check()
    assert 'appliance_worker_restarts_total{model="smol"}' in pool.metrics.render().decode()


def test_remote_backend_speaks_to_the_workers_openai_endpoint(worker: LlamaCppBackend) -> None:
    worker.process.ensure_running()
    remote = RemoteBackend("smol", worker.base_url, worker.token, slots=2)
    assert remote.health()["alive"]
    pool = InferencePool([remote], max_queue=2, queue_timeout_s=30)
    deltas = asyncio.run(_deltas(pool))
    assert "".join(d.content for d in deltas).strip()
    assert deltas[-1].finish_reason in ("stop", "length") and deltas[-1].usage["prompt_tokens"] > 10

    wrong = RemoteBackend("smol", worker.base_url, "not-the-key")
    assert not wrong.health()["alive"]
    with pytest.raises(Unavailable, match="401"):
        asyncio.run(_deltas(InferencePool([wrong], max_queue=1, queue_timeout_s=5)))


async def _deltas(pool: InferencePool) -> list[Any]:
    return [d async for d in pool.chat(messages(), SHORT)]


def test_a_reserved_slot_is_held_until_its_generation_or_release(worker: LlamaCppBackend) -> None:
    """What the streaming endpoints rely on to answer 429 before their 200: the slot is taken at
    admission, so a request that was admitted can't lose it to one that came later."""
    worker.process.ensure_running()
    pool = make_pool(worker, max_queue=1)

    async def run() -> None:
        lease = await pool.reserve(user="a")
        assert pool.stats() == {"outstanding": 1, "waiting": 0}
        queued = asyncio.create_task(collect(pool, user="b"))
        await until(lambda: pool.stats()["waiting"] == 1)
        with pytest.raises(Overloaded):
            await pool.reserve(user="c")  # slot reserved, queue full: refused at once
        assert "".join([d.content async for d in lease.chat(messages(), SHORT)]).strip()
        assert (await queued).strip()  # served once the reserved generation was done
        unused = await pool.reserve()
        unused.release()
        unused.release()  # twice is harmless: the slot is not given back twice
        assert pool.stats() == {"outstanding": 0, "waiting": 0}

    asyncio.run(run())


def test_routing_prefers_a_live_replica_to_a_less_loaded_dead_one(worker: LlamaCppBackend) -> None:
    worker.process.ensure_running()
    # Two slots, so the live replica is still free (half loaded) when it holds one request.
    live = RemoteBackend("smol", worker.base_url, worker.token, slots=2)
    dead = LlamaCppBackend("smol", worker.path, 1024, 1, 64)  # never started: no process
    pool = InferencePool([live, dead], max_queue=2, queue_timeout_s=30)

    async def run() -> str:
        held = await pool.reserve()  # both idle: the live one
        try:
            # Live at 1/2 against dead at 0/1: load alone would wake the dead worker (a model load
            # on this request's path) although the live one has room.
            return await collect(pool)
        finally:
            held.release()

    try:
        assert asyncio.run(run()).strip()
        assert dead.process.starts == 0
    finally:
        dead.close()


def test_a_replica_failing_its_health_check_is_out_of_routing(worker: LlamaCppBackend) -> None:
    worker.process.ensure_running()
    gone = RemoteBackend("smol", f"http://127.0.0.1:{free_port()}/v1", "key")  # nothing listens there
    good = RemoteBackend("smol", worker.base_url, worker.token)
    pool = InferencePool([gone, good], max_queue=2, queue_timeout_s=30)
    pool.check()
    assert [r["healthy"] for r in pool.health()["smol"]["replicas"]] == [False, True]
    # Both idle and "alive" (a remote has no process): without the probe the first one gets it, 503.
    assert asyncio.run(collect(pool)).strip()
    metrics = pool.metrics.render().decode()
    assert 'appliance_health_check_failures_total{model="smol"} 1.0' in metrics
    assert 'appliance_healthy_replicas{model="smol"} 1.0' in metrics


def test_a_hung_worker_is_taken_out_of_routing_and_restarted(worker: LlamaCppBackend) -> None:
    worker.process.ensure_running()
    pool = make_pool(worker)
    hung, starts = worker.process.pid, worker.process.starts
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)  # alive to the kernel, answers nothing: what a deadlock looks like
    try:
        pool.check()
        assert pool.health()["smol"]["replicas"][0]["healthy"] is False
        assert worker.process.pid == hung  # one missed probe is not yet a hang
        for _ in range(HUNG_AFTER - 1):
            pool.check()
    finally:
        if worker.process.pid == hung:  # not replaced: let it run again
            os.kill(hung, signal.SIGCONT)
    assert worker.process.pid != hung and worker.process.alive() and worker.process.starts == starts + 1
    assert pool.health()["smol"]["replicas"][0]["healthy"] is True
    assert asyncio.run(collect(pool)).strip()
    metrics = pool.metrics.render().decode()
    assert f'appliance_health_check_failures_total{{model="smol"}} {float(HUNG_AFTER)}' in metrics
    assert 'appliance_worker_restarts_total{model="smol"}' in metrics


def test_one_user_cannot_take_every_place_in_the_queue(worker: LlamaCppBackend) -> None:
    """Admission is fair per user: past ``max_queue_per_user`` waiting requests the same user gets
    429 at once, while the queue still has room for everyone else."""
    worker.process.ensure_running()
    pool = make_pool(worker, max_queue=4, max_queue_per_user=2)

    async def take(user: str) -> None:
        (await pool.reserve(user=user)).release()

    async def run() -> None:
        held = await pool.reserve(user="first")  # the one slot
        greedy = [asyncio.create_task(take("greedy")) for _ in range(2)]
        await until(lambda: pool.stats()["waiting"] == 2)
        with pytest.raises(Overloaded, match="you already have 2 requests waiting"):
            await pool.reserve(user="greedy")
        fair = asyncio.create_task(take("fair"))  # the queue is not full: others still get in
        await until(lambda: pool.stats()["waiting"] == 3)
        held.release()
        await asyncio.gather(*greedy, fair)
        assert pool.stats() == {"outstanding": 0, "waiting": 0}

    asyncio.run(run())
    # Without a per-user cap a pool built directly keeps the whole queue for anyone.
    assert make_pool(worker, max_queue=4).max_queue_per_user == 4


@pytest.mark.services
def test_a_users_queue_cap_holds_across_api_replicas(worker: LlamaCppBackend, redis: Any) -> None:
    """Two pools on one Redis stand for two API replicas: each has its own slot on the worker,
    but the queue places are counted across both, so a user who waits on one replica gets 429 on
    the other, while another user still gets in; places come back as requests leave the queue."""
    from appliance.sharedstate import RedisLeases, connect

    worker.process.ensure_running()
    url = redis.fresh_url()
    one = make_pool(worker, max_queue=4, max_queue_per_user=1, leases=RedisLeases(connect(url)))
    two = make_pool(worker, max_queue=4, max_queue_per_user=1, leases=RedisLeases(connect(url)))

    async def take(pool: InferencePool, user: str) -> None:
        (await pool.reserve(user=user)).release()

    async def run() -> None:
        held_one = await one.reserve(user="first")  # each replica's one slot is taken
        held_two = await two.reserve(user="first")
        waiting = asyncio.create_task(take(one, "greedy"))
        await until(lambda: one.stats()["waiting"] == 1)
        with pytest.raises(Overloaded, match="you already have 1 requests waiting") as refused:
            await two.reserve(user="greedy")  # an empty queue here, but greedy waits on the other
        assert refused.value.retry_after >= 1
        fair = asyncio.create_task(take(two, "fair"))
        await until(lambda: two.stats()["waiting"] == 1)
        held_one.release()
        held_two.release()
        await asyncio.gather(waiting, fair)
        await take(two, "greedy")  # out of the queue: its place came back
        assert one.leases is not None and one.leases.held("queue:smol") == 0

    asyncio.run(run())
    assert 'kind="user_queue_full"' in two.metrics.render().decode()
