"""Scale mode's job queue: ingestion jobs sent to Celery workers over Redis (``appliance worker``).

The API side records a job in the jobs table and sends ``appliance.run_job(job_id, payload)`` (JSON,
never pickle); a worker rebuilds the work from the payload (``IngestionJobs.execute``) and runs it
with the code of an in-process job, writing progress and outcome to the same table. What the
ledger gives in-process, here:

- crash recovery: tasks are acknowledged late and rejected when their worker is lost, so a job
  whose worker died goes back to the queue (Redis restores an unacknowledged message after the
  visibility timeout, ``2 * worker_lost_after_s``) and another worker redoes it; ingestion is
  idempotent per document, so the redo converges.
- no two workers on one job: a worker holds a Redis lease on the job (``SET NX`` with a TTL of
  ``worker_lost_after_s``, renewed every second). A delivery of a job whose lease is held (Redis
  hands a long job's message out again after the visibility timeout) is retried later, and runs
  only once the holder stopped renewing, i.e. died.
- cancel: ``revoke`` for a job still queued, and the table's cancel request for a running one.
- a message Redis lost (a restart without persistence): the jobs table keeps each active job's
  payload, and the API replicas' scheduler tick sends again a job that Redis no longer holds in any
  form (``held``: waiting, delivered and unacknowledged, or leased by a worker).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from celery import Celery
    from redis import Redis

log = logging.getLogger(__name__)

TASK = "appliance.run_job"
DEFAULT_QUEUE = "ingest"
POOLS = ("threads", "solo")
_LEASE_PREFIX = "appliance:job-lease:"
# Compare-and-renew / compare-and-delete: only the worker holding a lease touches it. A lease that
# ran out while nobody else took it (this worker stalled) is taken again: giving up the job then
# would leave it running in the table with no worker and no message to redo it.
_RENEW = """
local held = redis.call('get', KEYS[1])
if held == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
if not held then return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 or 0 end
return 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# Where kombu's Redis transport keeps messages: a list per queue and priority step (``queue`` for
# priority 0, ``queue\x06\x16<step>`` for the others) and one hash of those delivered but not acked.
_PRIORITY_SEP = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED = "unacked"


class JobExecutor(Protocol):
    """What a worker runs jobs with (``IngestionJobs``)."""

    def execute(
        self, job_id: str, payload: dict[str, Any], heartbeat: Callable[[], bool] | None = None
    ) -> dict[str, Any]: ...

    def is_active(self, job_id: str) -> bool: ...


class Lease:
    """One worker's claim on one job in Redis, lost when not renewed within ``ttl_s``."""

    def __init__(self, client: Redis, job_id: str, owner: str, ttl_s: float) -> None:
        self.client = client
        self.key = _LEASE_PREFIX + job_id
        self.owner = owner
        self.ttl_ms = max(1, math.ceil(ttl_s * 1000))

    def acquire(self) -> bool:
        return bool(self.client.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self.client.eval(_RENEW, 1, self.key, self.owner, self.ttl_ms))

    def release(self) -> None:
        self.client.eval(_RELEASE, 1, self.key, self.owner)


class CeleryQueue:
    """The ``Dispatch`` of scale mode, and the worker that drains it. Built by the container."""

    def __init__(
        self, redis_url: str, redis: Redis, lost_after_s: float = 60.0, queue: str = DEFAULT_QUEUE
    ) -> None:
        """``redis`` is the container's client of the same URL (the job leases); it closes it."""
        from celery import Celery

        self.redis = redis
        self.lost_after_s = lost_after_s
        self.queue = queue
        self.app: Celery = Celery("appliance", broker=redis_url, set_as_current=False)
        self.app.conf.update(
            task_serializer="json",
            result_serializer="json",
            event_serializer="json",
            accept_content=["json"],
            task_ignore_result=True,  # outcomes are in the jobs table
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            worker_prefetch_multiplier=1,  # a busy worker holds no second job back from the others
            task_default_queue=queue,
            broker_connection_retry_on_startup=True,
            broker_transport_options={
                "visibility_timeout": 2 * lost_after_s,
                "unacked_restore_interval": max(1.0, lost_after_s / 4),
                "unacked_restore_throttle": 1,
            },
            worker_hijack_root_logger=False,
            worker_send_task_events=False,
        )

    # -- the API side ---------------------------------------------------------------------------------

    def send(self, job_id: str, payload: dict[str, Any]) -> None:
        # The job id is the task id, so revoke names the job.
        self.app.send_task(TASK, args=[job_id, payload], task_id=job_id, queue=self.queue)

    def revoke(self, job_id: str) -> None:
        try:
            self.app.control.revoke(job_id)
        except Exception:  # best effort: the worker also finds the job cancelled in the table
            log.exception("could not revoke job %s", job_id)

    def held(self, job_ids: Collection[str]) -> set[str]:
        """The jobs of ``job_ids`` Redis still holds: a message waiting in the queue, one delivered
        to a worker and not yet acknowledged, or a worker's lease. Any other was lost with Redis's
        data (a restart without persistence) and is sent again by ``JobManager.requeue_lost``."""
        wanted = set(job_ids)
        ids = list(wanted)
        leases = self.redis.mget([_LEASE_PREFIX + j for j in ids]) if ids else []  # one round trip
        found = {j for j, lease in zip(ids, leases, strict=True) if lease is not None}
        lists = [self.queue, *(f"{self.queue}{_PRIORITY_SEP}{step}" for step in _PRIORITY_STEPS)]
        waiting = [m for name in lists for m in self.redis.lrange(name, 0, -1)]
        delivered = [_first(m) for m in self.redis.hvals(_UNACKED)]
        return found | {i for m in waiting + delivered if (i := _task_id(m)) in wanted}

    def close(self) -> None:
        self.app.close()

    # -- the worker side ------------------------------------------------------------------------------

    def register(self, executor: JobExecutor) -> None:
        """Define the task on this app, running jobs with ``executor``."""
        lost_after_s = self.lost_after_s
        owner = f"{socket.gethostname()}:{os.getpid()}"

        @self.app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
        def run_job(task: Any, job_id: str, payload: dict[str, Any]) -> None:
            lease = Lease(self.redis, job_id, owner, lost_after_s)
            if not lease.acquire():
                if executor.is_active(job_id):
                    # Another worker holds it (Redis handed a long job out again): look again once
                    # its lease would have run out, which happens only if that worker died.
                    log.info("job %s is running on another worker; looking again later", job_id)
                    raise task.retry(countdown=lost_after_s)
                return
            try:
                executor.execute(job_id, payload, lease.renew)
            finally:
                lease.release()

    def run_worker(
        self,
        executor: JobExecutor,
        concurrency: int = 1,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        pool: str = "threads",
        loglevel: str = "INFO",
    ) -> int:
        """Consume ``queues`` until stopped (SIGTERM: warm shutdown, the running job is finished or
        handed back); returns the exit code."""
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}")
        self.register(executor)
        worker = self.app.Worker(
            hostname=f"appliance-{os.getpid()}@{socket.gethostname()}",
            pool_cls=pool,
            concurrency=concurrency,
            queues=list(queues),
            loglevel=loglevel,
            without_mingle=True,
            without_gossip=True,
        )
        worker.start()
        return int(worker.exitcode or 0)


def _first(raw: bytes | str) -> Any:
    """An unacknowledged entry is ``[message, exchange, routing key]``."""
    try:
        return json.loads(raw)[0]
    except (ValueError, LookupError, TypeError):
        return None


def _task_id(message: Any) -> str | None:
    """The task id (our job id) of a kombu message, raw or decoded; None if it is not one."""
    try:
        if isinstance(message, bytes | str):
            message = json.loads(message)
        return str(message["headers"]["id"])
    except (ValueError, LookupError, TypeError):
        return None
