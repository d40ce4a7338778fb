"""Ingestion jobs: one writer thread owned by the container, live progress, cancel, a schedule.

Jobs run one at a time on a single background thread: the embedded shard has one writer, and on
a small CPU budget two parses at once would only slow each other down. Their live progress is in
memory; their state and outcome are written to the ``jobs`` table at every transition (and about
once a second while running), so `GET /api/v1/jobs/{id}` answers after a restart too, and a job
that was running when the process died shows as ``interrupted``. Finished jobs leave memory at
once and the table after ``keep_days`` or beyond the newest ``keep_count``.

In scale mode a ``Dispatch`` (``appliance.ingestion.queue``: Celery on Redis) takes the place of the
writer thread: ``submit`` records the job and hands its JSON payload over, a worker process runs it
with ``execute``, and the table is then the only shared state: progress, results, and a cancel
request (``detail["cancel_requested"]``) that the running worker polls.
"""

from __future__ import annotations

import builtins
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, func, insert, select, update

from appliance.db import jobs as jobs_table
from appliance.db import now
from appliance.domain import ApplianceError, NotFound
from appliance.ingestion.pipeline import IngestProgress

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
PERSIST_EVERY_S = 1.0
# How often a worker running a dispatched job looks for a cancel request and renews its lease.
WATCH_EVERY_S = 1.0
CANCEL_REQUESTED = "cancel_requested"  # key of a job's detail: set by the API, read by the worker


@dataclass
class Job:
    id: str
    kind: str
    actor: str
    collection: str
    source_id: str | None
    detail: dict[str, Any]
    status: str = "queued"
    progress: IngestProgress = field(default_factory=IngestProgress)
    result: dict[str, Any] | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=now)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    # Set when this process lost the job to another worker (its lease ran out): it stops and leaves
    # the row to the new owner.
    abandoned: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "actor": self.actor,
            "collection": self.collection,
            "source_id": self.source_id,
            "detail": self.detail,
            "progress": self.progress.snapshot() if self.status != "queued" else _empty_progress(),
            "result": self.result,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
        }


def _empty_progress() -> dict[str, Any]:
    return IngestProgress().snapshot() | {"elapsed_s": 0.0, "eta_s": None}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Work = Callable[[Job], dict[str, Any]]


class Dispatch(Protocol):
    """Where jobs run when not on this process's writer thread (the Celery queue)."""

    def send(self, job_id: str, payload: dict[str, Any]) -> None:
        """Queue the job; ``payload`` (JSON) is all a worker needs to rebuild its work."""

    def revoke(self, job_id: str) -> None:
        """Drop the job from the queue if it has not started (best effort)."""

    def held(self, job_ids: Collection[str]) -> set[str]:
        """The jobs of ``job_ids`` the queue still has in some form (waiting, running, leased)."""

    def close(self) -> None: ...


class JobManager:
    def __init__(
        self,
        engine: Engine,
        tick_s: float = 30.0,
        keep_days: float = 30.0,
        keep_count: int = 10_000,
        dispatch: Dispatch | None = None,
        requeue_after_s: float = 60.0,
    ) -> None:
        """``requeue_after_s``: how old an active job must be before ``requeue_lost`` may send it
        again (a job is recorded a moment before its message is sent)."""
        self.engine = engine
        self.dispatch = dispatch
        self.requeue_after_s = requeue_after_s
        self.tick_s = tick_s
        self.keep_days = keep_days
        self.keep_count = keep_count
        self._live: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="appliance-ingest")
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._due: Callable[[], object] | None = None
        self.interrupted: list[dict[str, Any]] = []
        if dispatch is None:
            self._interrupt_leftovers()
        # With a dispatch, active rows are other processes' (workers', other replicas'): a worker
        # that dies leaves its job to the queue's redelivery, not to whoever starts next.
        self.prune()

    def _interrupt_leftovers(self) -> None:
        # This process owns the data dir now: whatever was running before it did not finish.
        with self.engine.begin() as conn:
            self.interrupted = [
                _row_dict(r) for r in conn.execute(select(jobs_table).where(jobs_table.c.status.in_(ACTIVE)))
            ]
            conn.execute(
                update(jobs_table)
                .where(jobs_table.c.status.in_(ACTIVE))
                .values(
                    status="interrupted",
                    error="the process stopped before the job finished",
                    finished_at=now(),
                )
            )

    def prune(self) -> int:
        """Forget finished jobs older than ``keep_days`` and beyond the newest ``keep_count``."""
        finished = jobs_table.c.status.not_in(ACTIVE)
        newest = select(jobs_table.c.id).order_by(jobs_table.c.created_at.desc()).limit(self.keep_count)
        cutoff = now() - timedelta(days=self.keep_days)
        with self.engine.begin() as conn:
            old = conn.execute(delete(jobs_table).where(finished, jobs_table.c.created_at < cutoff)).rowcount
            many = conn.execute(
                delete(jobs_table).where(finished, jobs_table.c.id.not_in(newest.scalar_subquery()))
            ).rowcount
        return int(old or 0) + int(many or 0)

    # -- submitting and running --------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        actor: str,
        collection: str,
        work: Work,
        source_id: str | None = None,
        detail: dict[str, Any] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a job: ``work`` runs on this process's writer thread, or, with a dispatch, a
        worker rebuilds it from ``payload`` (required then)."""
        job = Job(uuid.uuid4().hex[:16], kind, actor, collection, source_id, detail or {})
        if self.dispatch is not None:
            if payload is None:
                raise ValueError(f"a {kind} job needs a payload to run on a worker")
            with self.engine.begin() as conn:
                conn.execute(insert(jobs_table).values(**self._row(job), payload=payload))
            self.dispatch.send(job.id, payload)
            return job
        self._persist_progress(job)
        with self._lock:
            self._live[job.id] = job
        with self.engine.begin() as conn:
            conn.execute(insert(jobs_table).values(**self._row(job)))
        self._executor.submit(self._run, job, work)
        return job

    def _persist_progress(self, job: Job) -> None:
        last = [0.0]

        def persist_now_and_then(event: str, item: Any, state: IngestProgress) -> None:
            if time.monotonic() - last[0] >= PERSIST_EVERY_S:
                last[0] = time.monotonic()
                self._persist(job)

        job.progress.listener = persist_now_and_then

    def execute(self, job_id: str, work: Work, heartbeat: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Run a dispatched job in this process (a worker), as ``_run`` runs a local one. The job is
        claimed in the table first, so one cancelled or finished meanwhile (a duplicate delivery)
        is not run again; one left ``running`` by a worker that died runs again from the start,
        which converges because ingestion is idempotent per document. ``heartbeat`` is called
        about once a second while it runs; when it returns False (this worker lost the job's
        lease), the job stops here and its row is left to the new owner."""
        with self.engine.begin() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
            if row is None:
                raise NotFound(f"no job {job_id!r}")
            claimed = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id, jobs_table.c.status.in_(ACTIVE))
                .values(status="running", started_at=now(), error=None)
            ).rowcount
        if not claimed:
            return self.get(job_id)
        m = row._mapping
        job = Job(m["id"], m["kind"], m["actor"], m["collection"], m["source_id"], dict(m["detail"] or {}))
        job.created_at = _aware(m["created_at"])
        self._persist_progress(job)
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(WATCH_EVERY_S):
                try:
                    if heartbeat is not None and not heartbeat():
                        log.warning("job %s: lost its lease to another worker; stopping here", job.id)
                        job.abandoned = True
                        job.cancel.set()
                    if self._cancel_requested(job.id):
                        job.cancel.set()
                except Exception:  # a blip of the DB or Redis: look again next time
                    log.exception("job %s: could not check for a cancel request", job.id)

        if self._cancel_requested(job.id):
            job.cancel.set()
        watcher = threading.Thread(target=watch, name=f"appliance-job-{job.id}", daemon=True)
        watcher.start()
        try:
            self._run(job, work)
        finally:
            stop.set()
            watcher.join()
        return job.as_dict()

    def _cancel_requested(self, job_id: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs_table.c.detail).where(jobs_table.c.id == job_id)).first()
        return row is None or bool((row.detail or {}).get(CANCEL_REQUESTED))

    def run_inline(self, kind: str, actor: str, collection: str, work: Work, **kw: Any) -> Job:
        """Run a job in the calling thread (the CLI without a server), recorded like any other."""
        job = Job(uuid.uuid4().hex[:16], kind, actor, collection, kw.get("source_id"), kw.get("detail") or {})
        with self.engine.begin() as conn:
            conn.execute(insert(jobs_table).values(**self._row(job)))
        self._run(job, work)
        return job

    def _run(self, job: Job, work: Work) -> None:
        try:
            if job.cancel.is_set():
                job.status = "cancelled"
                return
            job.status = "running"
            job.started_at = now()
            job.progress.started = time.monotonic()
            self._persist(job)
            try:
                job.result = work(job)
                job.status = "cancelled" if job.cancel.is_set() else "succeeded"
            except ApplianceError as exc:
                job.status, job.error = "failed", exc.message
            except Exception as exc:  # the job fails; the writer thread lives on
                log.exception("job %s failed", job.id)
                job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        finally:
            job.finished_at = now()
            if not job.abandoned:
                self._persist(job)
            with self._lock:
                self._live.pop(job.id, None)  # the table has it now; memory holds active jobs only
            try:
                self.prune()
            except Exception:  # bookkeeping must never fail the ingestion itself
                log.exception("could not prune the job table")
            job.finished.set()

    def _row(self, job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "actor": job.actor,
            "collection": job.collection,
            "source_id": job.source_id,
            "detail": job.detail,
            "progress": job.as_dict()["progress"],
            "result": job.result,
            "error": job.error,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }

    def _persist(self, job: Job) -> None:
        if job.abandoned:
            return
        row = self._row(job)
        # What a job is never changes after submit: leaving those columns alone keeps a cancel
        # request another process wrote into ``detail``.
        for key in ("id", "kind", "actor", "collection", "source_id", "detail", "created_at"):
            row.pop(key)
        if job.status not in ACTIVE:
            row["payload"] = None  # done: nothing will send it again
        try:
            with self.engine.begin() as conn:
                conn.execute(update(jobs_table).where(jobs_table.c.id == job.id).values(**row))
        except Exception:  # progress bookkeeping must never fail the ingestion itself
            log.exception("could not record job %s", job.id)

    # -- reading ------------------------------------------------------------------------------------

    def get(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            live = self._live.get(job_id)
        if live is not None:
            return live.as_dict()
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs_table).where(jobs_table.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id!r}")
        return _row_dict(row)

    def list(
        self, limit: int = 50, status: str | None = None, source_id: str | None = None
    ) -> list[dict[str, Any]]:
        query = select(jobs_table).order_by(jobs_table.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(jobs_table.c.status == status)
        if source_id:
            query = query.where(jobs_table.c.source_id == source_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        with self._lock:
            live = dict(self._live)
        return [live[r.id].as_dict() if r.id in live else _row_dict(r) for r in rows]

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        with self._lock:
            live = self._live.get(job_id)
        if live is not None:
            live.finished.wait(timeout)
            return self.get(job_id)
        # Another process runs it (a worker): its row says when it is done.
        end = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while (job := self.get(job_id))["status"] in ACTIVE and (end is None or time.monotonic() < end):
            time.sleep(delay if end is None else max(0.0, min(delay, end - time.monotonic())))
            delay = min(delay * 2, 1.0)
        return job

    def _active(self, column: Any, value: str) -> bool:
        # From the table, not memory: in scale mode the jobs run in other processes.
        with self.engine.connect() as conn:
            found = conn.execute(
                select(func.count())
                .select_from(jobs_table)
                .where(column == value, jobs_table.c.status.in_(ACTIVE))
            ).scalar_one()
        return bool(found)

    def active_for_collection(self, collection: str) -> bool:
        return self._active(jobs_table.c.collection, collection)

    def active_for_source(self, source_id: str) -> bool:
        return self._active(jobs_table.c.source_id, source_id)

    def is_active(self, job_id: str) -> bool:
        return self._active(jobs_table.c.id, job_id)

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._live.get(job_id)
        if job is None:
            self._cancel_elsewhere(job_id)
            return self.get(job_id)
        if job.status in ACTIVE:
            job.cancel.set()
            if job.status == "queued":
                job.status = "cancelled"
                job.finished_at = now()
                self._persist(job)
                job.finished.set()
        return job.as_dict()

    def _cancel_elsewhere(self, job_id: str) -> None:
        """Cancel a job this process does not run: a queued one is cancelled in the table (and
        dropped from the queue), a running one gets a cancel request its worker acts on."""
        if self.get(job_id)["status"] not in ACTIVE:  # NotFound when unknown
            return
        with self.engine.begin() as conn:
            # Conditional, so a worker claiming it at the same moment either finds it cancelled or
            # makes this a no-op (and then the request below stops it).
            queued = conn.execute(
                update(jobs_table)
                .where(jobs_table.c.id == job_id, jobs_table.c.status == "queued")
                .values(status="cancelled", finished_at=now(), payload=None)
            ).rowcount
        if queued and self.dispatch is not None:
            self.dispatch.revoke(job_id)
        with self.engine.begin() as conn:
            row = conn.execute(select(jobs_table.c.detail).where(jobs_table.c.id == job_id)).first()
            if row is not None:
                detail = dict(row.detail or {}) | {CANCEL_REQUESTED: True}
                conn.execute(update(jobs_table).where(jobs_table.c.id == job_id).values(detail=detail))

    def requeue_lost(self) -> builtins.list[str]:  # ``list`` here is the method above
        """Send again the active jobs the queue no longer holds, older than ``requeue_after_s``: their
        message was lost with Redis's data (a restart without persistence), so no worker would
        ever run them. Safe if it was not lost after all: a second delivery of a job that is
        claimed or finished is not run again (``execute``). Returns the ids sent again."""
        if self.dispatch is None:
            return []
        cutoff = now() - timedelta(seconds=self.requeue_after_s)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs_table.c.id, jobs_table.c.payload).where(
                    jobs_table.c.status.in_(ACTIVE),
                    jobs_table.c.payload.is_not(None),
                    jobs_table.c.created_at < cutoff,
                )
            ).all()
        if not rows:
            return []
        held = self.dispatch.held([r.id for r in rows])
        lost = [r for r in rows if r.id not in held]
        for r in lost:
            log.warning("job %s: the queue no longer holds it (Redis lost its data?); sending it again", r.id)
            self.dispatch.send(r.id, r.payload)
        return [r.id for r in lost]

    # -- schedule -----------------------------------------------------------------------------------

    def start_scheduler(self, run_due: Callable[[], object]) -> None:
        """Call ``run_due`` every ``tick_s`` seconds until ``close``."""
        if self._scheduler is not None:
            return
        self._due = run_due

        def loop() -> None:
            while not self._stop.wait(self.tick_s):
                try:
                    run_due()
                except Exception:
                    log.exception("scheduled sync failed to start")
                try:
                    self.requeue_lost()
                except Exception:  # Redis or the database away: look again next tick
                    log.exception("could not look for jobs the queue lost")

        self._scheduler = threading.Thread(target=loop, name="appliance-scheduler", daemon=True)
        self._scheduler.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for job in self._live.values():
                job.cancel.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            for job in self._live.values():
                if job.status == "queued":
                    job.status, job.finished_at = "cancelled", now()
                    self._persist(job)
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
        if self.dispatch is not None:
            self.dispatch.close()


def _row_dict(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {
        "id": m["id"],
        "kind": m["kind"],
        "status": m["status"],
        "actor": m["actor"],
        "collection": m["collection"],
        "source_id": m["source_id"],
        "detail": m["detail"] or {},
        "progress": m["progress"] or _empty_progress(),
        "result": m["result"],
        "error": m["error"],
        "created_at": _iso(m["created_at"]),
        "started_at": _iso(m["started_at"]),
        "finished_at": _iso(m["finished_at"]),
    }


def is_due(last_sync_at: datetime | None, interval_s: float, at: datetime | None = None) -> bool:
    if interval_s <= 0:
        return False
    if last_sync_at is None:
        return True
    at = at or now()
    return (at - _aware(last_sync_at)).total_seconds() >= interval_s
