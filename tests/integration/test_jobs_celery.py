"""Scale mode's jobs: Celery workers on a real redis-server, the metadata on a real PostgreSQL, and
real `appliance worker` processes on loopback.

The vector store: no Qdrant server exists on this machine, so the jobs write the embedded Qdrant
Edge shard, which has exactly one owner process. Here that owner is the worker: it has a data dir
of its own (``worker``) and is the only process that opens the shard the jobs write. The API side
(the test process, through the same ``IngestionJobs`` service the REST routes call) has another
data dir and never touches that shard: submitting, reading and cancelling jobs go through
PostgreSQL and Redis only. The shard is checked after the last worker has stopped. With
``QDRANT_URL`` (``vectorstore.backend: qdrant``, ``vectorstore.url``) the API and every worker
would share the Qdrant server instead, several workers could run at once, and the API would see the
chunks as they are written.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from appliance.container import Container
from appliance.db import documents, jobs, sources
from appliance.domain import LOCAL_ADMIN
from appliance.ingestion.jobs import ACTIVE
from appliance.settings import load_settings
from tests.conftest import ROOT, Postgres, Redis, base_env
from tests.fixtures.shard import check_ledger_against_shard

pytestmark = [pytest.mark.services, pytest.mark.slow]

STORE_NOTE = " ".join(__doc__.split("\n\n")[1].split())  # the store arrangement, said plainly
KB = Path(__file__).resolve().parents[1] / "fixtures" / "kb"
# Short, so a job whose worker was killed is taken over within seconds (the lease runs out after
# this, the queue message comes back after twice this).
LOST_AFTER_S = "4"
COPIES = 3


def make_corpus(root: Path, copies: int = COPIES) -> Path:
    """The labelled kb, ``copies`` times over, each copy a different text (so nothing is reused)."""
    for n in range(copies):
        folder = root / f"copy-{n}"
        folder.mkdir(parents=True)
        for f in sorted(KB.iterdir()):
            if f.suffix == ".jsonl":  # the questions, not a document
                continue
            (folder / f.name).write_text(f"Copy {n} of {f.name}.\n\n" + f.read_text(encoding="utf-8"))
    return root


class Worker:
    """`appliance worker` in a process of its own."""

    def __init__(self, data_dir: Path, db_url: str, redis_url: str) -> None:
        self.log = data_dir.parent / f"worker-{time.monotonic_ns()}.log"
        env = base_env(
            data_dir,
            APPLIANCE_DATABASE__URL=db_url,
            APPLIANCE_REDIS__URL=redis_url,
            APPLIANCE_INGESTION__WORKER_LOST_AFTER_S=LOST_AFTER_S,
            APPLIANCE_LOG_LEVEL="INFO",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "worker", "--concurrency", "1", "--queues", "ingest"],
            env=env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - lives as long as the worker
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


def api_side(root: Path, db_url: str, redis_url: str, **ingestion: float) -> Container:
    """The API's container in scale mode (a data dir that is not the worker's); ``ingestion``:
    more ingestion settings."""
    return Container(
        load_settings(
            data_dir=root,
            database={"url": db_url},
            redis={"url": redis_url},
            ingestion={"worker_lost_after_s": float(LOST_AFTER_S), **ingestion},
            log_level="WARNING",
        )
    )


def poll(what: Callable[[], Any], deadline_s: float, why: str, worker: Worker | None = None) -> Any:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if (got := what()) is not None and got is not False:
            return got
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"worker exited while waiting for {why}:\n{worker.tail()}")
        time.sleep(0.1)
    raise AssertionError(f"no {why} within {deadline_s} s" + (f":\n{worker.tail()}" if worker else ""))


def job_row(container: Container, job_id: str) -> dict[str, Any]:
    return container.jobs.get_job(LOCAL_ADMIN, job_id)


def finished(api: Container, job_id: str, worker: Worker, why: str) -> dict[str, Any]:
    """The job's row once it has ended (succeeded, failed, cancelled), within 300 s."""
    return poll(lambda: (j := job_row(api, job_id))["status"] not in ACTIVE and j, 300, why, worker)


def uris(corpus: Path) -> set[str]:
    return {p.resolve().as_uri() for p in corpus.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def scale(
    tmp_path_factory: pytest.TempPathFactory, postgres: Postgres, redis: Redis
) -> Iterator[dict[str, Any]]:
    """One PostgreSQL database, one Redis database, the API side and one worker."""
    root = tmp_path_factory.mktemp("scale")
    db_url, redis_url = postgres.create_database(), redis.fresh_url()
    api = api_side(root / "api", db_url, redis_url)
    worker = Worker(root / "worker", db_url, redis_url)
    try:
        yield {"root": root, "db": db_url, "redis": redis_url, "api": api, "worker": worker}
    finally:
        worker.stop()
        api.close()


def test_a_job_submitted_on_the_api_side_is_done_by_a_worker(scale: dict[str, Any]) -> None:
    api, worker = scale["api"], scale["worker"]
    corpus = make_corpus(scale["root"] / "small", copies=1)
    job = api.jobs.start_job(LOCAL_ADMIN, [str(corpus)], None, ["group:staff"])
    assert job_row(api, job.id)["status"] == "queued"  # recorded before any worker saw it
    done = finished(api, job.id, worker, "finished job")
    assert done["status"] == "succeeded", done
    assert done["result"]["added"] == len(uris(corpus)) and done["result"]["failed"] == []
    assert done["progress"]["done"] == len(uris(corpus))
    # The ledger the worker wrote is the API's ledger: same database.
    with api.engine.connect() as conn:
        rows = conn.execute(select(documents.c.uri, documents.c.acl, documents.c.status)).all()
    assert {r.uri for r in rows} == uris(corpus)
    assert all(r.status == "indexed" and r.acl == ["group:staff"] for r in rows)
    assert not api.jobs.manager.active_for_collection("default")


def test_cancel_on_the_api_side_stops_the_job_on_the_worker(scale: dict[str, Any]) -> None:
    api, worker = scale["api"], scale["worker"]
    # Big enough that the job still runs when the cancel arrives, on a fast idle host too.
    corpus = make_corpus(scale["root"] / "big", copies=12)
    running = api.jobs.start_job(LOCAL_ADMIN, [str(corpus)], "big", [])
    queued = api.jobs.start_job(LOCAL_ADMIN, [str(corpus)], "big", [])  # behind it: concurrency 1
    poll(
        lambda: (j := job_row(api, running.id))["status"] == "running" and j["progress"]["done"] >= 1,
        300,
        "running job with a document done",
        worker,
    )
    assert api.jobs.cancel_job(LOCAL_ADMIN, queued.id)["status"] == "cancelled"
    assert api.jobs.cancel_job(LOCAL_ADMIN, running.id)["status"] == "running"  # a request, for now
    stopped = api.jobs.manager.wait(running.id, 120)
    assert stopped["status"] == "cancelled", stopped
    assert stopped["result"]["cancelled"] is True
    total = len(uris(corpus))
    assert stopped["result"]["added"] < total  # it stopped before the end
    assert stopped["finished_at"] is not None
    # The queued one never started, and stays cancelled after the worker went past it.
    follow = api.jobs.start_job(
        LOCAL_ADMIN, [str(make_corpus(scale["root"] / "after", copies=1))], "after", []
    )
    assert api.jobs.manager.wait(follow.id, 300)["status"] == "succeeded", worker.tail()
    never = job_row(api, queued.id)
    assert never["status"] == "cancelled" and never["started_at"] is None, never


def test_a_worker_killed_mid_job_is_replaced_and_the_job_converges(
    tmp_path: Path, postgres: Postgres, redis: Redis
) -> None:
    db_url, redis_url = postgres.create_database(), redis.fresh_url()
    corpus = make_corpus(tmp_path / "corpus")
    expected = uris(corpus)
    api = api_side(tmp_path / "api", db_url, redis_url)
    workers: list[Worker] = []
    try:
        job = api.jobs.start_job(LOCAL_ADMIN, [str(corpus)], None, [])
        workers.append(Worker(tmp_path / "worker", db_url, redis_url))

        def indexed() -> int:
            with api.engine.connect() as conn:
                query = select(func.count()).select_from(documents).where(documents.c.status == "indexed")
                return int(conn.execute(query).scalar_one())

        # Mid-job: some documents are in, most are not.
        poll(lambda: indexed() >= 3, 300, "3 documents indexed", workers[0])
        workers[0].kill()
        killed_at = indexed()
        assert killed_at < len(expected), "the job ended before the kill: make the corpus bigger"
        assert job_row(api, job.id)["status"] == "running"  # as the dead worker left it

        # Same data dir (its shard, as the dead worker left it): the lock died with the process.
        workers.append(Worker(tmp_path / "worker", db_url, redis_url))
        done = api.jobs.manager.wait(job.id, 300)
        assert done["status"] == "succeeded", (done, workers[1].tail())
        result = done["result"]
        assert result["failed"] == []
        # The redo skipped what the first worker had committed and did the rest exactly once.
        assert result["added"] + result["unchanged"] + result["updated"] == len(expected)
        assert result["unchanged"] >= killed_at
    finally:
        for w in workers:
            w.stop()
        api.close()
    worker_settings = load_settings(
        data_dir=tmp_path / "worker", database={"url": db_url}, log_level="WARNING"
    )
    records = check_ledger_against_shard(worker_settings, f"killed at {killed_at}")
    assert {r.uri for r in records} == expected
    chunks = sum(len(r.chunk_ids) for r in records)
    print(
        f"after the kill at {killed_at}/{len(expected)} documents: {len(records)} documents, {chunks} chunks"
    )
    print(STORE_NOTE)


def shard_points(data_dir: Path, collection: str = "default") -> int:
    container = Container(load_settings(data_dir=data_dir, log_level="WARNING"))
    try:
        store = container.store
        return store.count(collection) if collection in store.collections() else 0
    finally:
        container.close()


def test_a_long_job_runs_on_one_worker_while_it_lives(
    tmp_path: Path, postgres: Postgres, redis: Redis
) -> None:
    """Redis hands a job's message out again once it has been unacknowledged for the visibility
    timeout, also while its worker is alive and busy with it. The job lease keeps the second worker
    off it: it looks again later, and by then the job is done. Each worker has its own shard here
    (see the module's note), so a second run would show as points in the other shard."""
    db_url, redis_url = postgres.create_database(), redis.fresh_url()
    # Longer than the visibility timeout (2 x LOST_AFTER_S) and a look, on a fast idle host too.
    corpus = make_corpus(tmp_path / "corpus", copies=16)
    api = api_side(tmp_path / "api", db_url, redis_url)
    workers = [Worker(tmp_path / f"worker-{i}", db_url, redis_url) for i in range(2)]
    try:
        job = api.jobs.start_job(LOCAL_ADMIN, [str(corpus)], None, [])
        seen = "is running on another worker"
        poll(
            lambda: (
                any(seen in w.log.read_text(errors="replace") for w in workers)
                or api.jobs.manager.get(job.id)["status"] == "succeeded"
            ),
            600,
            "second delivery or the end of the job",
        )
        assert api.jobs.manager.get(job.id)["status"] == "running", (
            "no second delivery: make the corpus bigger"
        )
        done = api.jobs.manager.wait(job.id, 600)
        assert done["status"] == "succeeded" and done["result"]["added"] == len(uris(corpus)), done
    finally:
        for w in workers:
            w.stop()
        api.close()
    points = sorted(shard_points(tmp_path / f"worker-{i}") for i in range(2))
    assert points[0] == 0 and points[1] > 0, points  # one worker did it all, once
    with api.engine.connect() as conn:
        ledger = conn.execute(select(documents.c.chunk_ids)).all()
    assert points[1] == sum(len(r.chunk_ids) for r in ledger)


def test_a_due_schedule_runs_once_with_two_replicas_ticking(
    tmp_path: Path, postgres: Postgres, redis: Redis
) -> None:
    """Two API replicas (each its own container, engine and data dir) tick at the same moment on
    one PostgreSQL and one Redis, several rounds; no worker runs, so what they queued stays in
    Redis to be counted."""
    import redis as redis_client

    db_url, redis_url = postgres.create_database(), redis.fresh_url()
    folder = make_corpus(tmp_path / "src", copies=1)
    replicas = [api_side(tmp_path / f"api-{i}", db_url, redis_url) for i in range(2)]
    try:
        source = replicas[0].jobs.add_source(LOCAL_ADMIN, None, str(folder), {}, None, [], 3600)
        rounds = 6
        for n in range(rounds):
            barrier = threading.Barrier(2)
            started: list[list[str]] = [[], []]

            def tick(
                i: int, barrier: threading.Barrier = barrier, started: list[list[str]] = started
            ) -> None:
                barrier.wait(timeout=30)
                started[i] = [j.id for j in replicas[i].jobs.run_due()]

            threads = [threading.Thread(target=tick, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
            assert len(started[0]) + len(started[1]) == 1, (n, started)
            # Due again for the next round: its job "finished" an interval ago.
            with replicas[0].engine.begin() as conn:
                conn.execute(update(jobs).values(status="succeeded"))
                conn.execute(update(sources).where(sources.c.id == source.id).values(last_sync_at=None))
        with replicas[0].engine.connect() as conn:
            synced = conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.source_id == source.id)
            ).scalar_one()
        assert synced == rounds
        assert redis_client.Redis.from_url(redis_url).llen("ingest") == rounds  # one message each
    finally:
        for c in replicas:
            c.close()


def test_worker_refuses_to_start_without_redis(tmp_path: Path) -> None:
    env = base_env(tmp_path / "data")
    got = subprocess.run(
        [sys.executable, "-m", "appliance", "worker"], env=env, capture_output=True, text=True, cwd=ROOT
    )
    assert got.returncode == 2 and "redis.url" in got.stderr, got.stderr


def test_a_lease_is_held_by_one_worker_and_taken_again_only_when_free(redis: Redis) -> None:
    import redis as redis_client

    from appliance.ingestion.queue import Lease

    client = redis_client.Redis.from_url(redis.fresh_url())
    mine, theirs = Lease(client, "j1", "worker-a", 30), Lease(client, "j1", "worker-b", 30)
    assert mine.acquire() and not theirs.acquire()
    assert mine.renew() and not theirs.renew()
    theirs.release()  # not theirs to release
    assert not theirs.acquire()
    client.delete(mine.key)  # ran out while worker-a stalled, and nobody took it
    assert mine.renew()  # so worker-a keeps it
    assert not theirs.acquire()
    mine.release()
    assert theirs.acquire() and not mine.renew()  # taken over: worker-a must stop


def test_a_queued_job_carries_no_password_in_the_clear(
    tmp_path: Path, postgres: Postgres, redis: Redis
) -> None:
    """The payload waits in Redis: a source's password in it is sealed with the data dir's key (the
    one the workers share), as a registered source's is in the database."""
    import base64
    import json

    import redis as redis_client

    redis_url = redis.fresh_url()
    api = api_side(tmp_path / "api", postgres.create_database(), redis_url)
    url = "http://reader:hunter2-secret@127.0.0.1:9/docs"
    try:
        job = api.jobs.start_job(LOCAL_ADMIN, [url], None, [])
        raw = redis_client.Redis.from_url(redis_url).lrange("ingest", 0, -1)
        assert len(raw) == 1
        body = base64.b64decode(json.loads(raw[0])["body"])  # kombu's envelope: base64 JSON
        assert b"hunter2-secret" not in body
        (job_id, payload), _, _ = json.loads(body)
        assert job_id == job.id and payload["specs"][0] != url
        assert "hunter2-secret" not in json.dumps(job_row(api, job.id))
        with api.engine.connect() as conn:  # the copy kept in case Redis loses the message
            kept = conn.execute(select(jobs.c.payload).where(jobs.c.id == job.id)).scalar_one()
        assert kept == payload and "hunter2-secret" not in json.dumps(kept)
        box = api.jobs.sources.box
        assert box is not None and box.unseal(payload["specs"][0]) == url  # what the worker opens
    finally:
        api.close()


def test_a_job_whose_message_redis_lost_is_sent_again_by_the_scheduler_tick(
    tmp_path: Path, postgres: Postgres, redis: Redis
) -> None:
    """Redis loses its data (a restart without persistence; FLUSHDB here empties the database the
    same way) while a job waits for a worker: no worker would ever run it. The API replica's
    scheduler tick finds the active job that Redis no longer holds and sends it again."""
    import redis as redis_client

    db_url, redis_url = postgres.create_database(), redis.fresh_url()
    corpus = make_corpus(tmp_path / "corpus", copies=1)
    api = api_side(tmp_path / "api", db_url, redis_url, scheduler_tick_s=0.5)
    worker: Worker | None = None
    try:
        job = api.jobs.start_job(LOCAL_ADMIN, [str(corpus)], None, [])
        manager = api.jobs.manager
        assert manager.dispatch is not None and manager.dispatch.held([job.id, "nope"]) == {job.id}
        assert manager.requeue_lost() == []  # held, and younger than the grace anyway
        redis_client.Redis.from_url(redis_url).flushdb()
        assert manager.dispatch.held([job.id]) == set()

        worker = Worker(tmp_path / "worker", db_url, redis_url)
        time.sleep(float(LOST_AFTER_S) + 2)  # a worker is there, but nothing tells it of the job
        assert job_row(api, job.id)["status"] == "queued"

        api.jobs.start_scheduler()  # what `serve` starts: ticks every 0.5 s here
        done = finished(api, job.id, worker, "the job sent again and finished")
        assert done["status"] == "succeeded", done
        assert done["result"]["added"] == len(uris(corpus)) and done["result"]["failed"] == []
        with api.engine.connect() as conn:
            kept = conn.execute(select(jobs.c.payload).where(jobs.c.id == job.id)).scalar_one()
        assert kept is None  # finished: nothing left to send again
        assert manager.requeue_lost() == []
    finally:
        if worker is not None:
            worker.stop()
        api.close()
    worker_settings = load_settings(
        data_dir=tmp_path / "worker", database={"url": db_url}, log_level="WARNING"
    )
    records = check_ledger_against_shard(worker_settings, "sent again")
    assert {r.uri for r in records} == uris(corpus)  # once each: the lost message was never run
