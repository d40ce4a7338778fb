"""Ingestion jobs: one writer thread owned by the container, live progress, cancel, a schedule.

Jobs run one at a time on a single background thread: the embedded shard has one writer, and on
a small CPU budget two parses at once would only slow each other down. Their live progress is in
memory; their state and outcome are written to the ``jobs`` table at every transition (and about
once a second while running), so `GET /api/v1/jobs/{id}` answers after a restart too, and a job
that was running when the process died shows as ``interrupted``. Finished jobs leave memory at
once and the table after ``keep_days`` or beyond the newest ``keep_count``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update

from appliance.db import jobs as jobs_table
from appliance.db import now
from appliance.domain import ApplianceError, NotFound
from appliance.ingestion.pipeline import IngestProgress

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
PERSIST_EVERY_S = 1.0


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


class JobManager:
    def __init__(
        self, engine: Engine, tick_s: float = 30.0, keep_days: float = 30.0, keep_count: int = 10_000
    ) -> None:
        self.engine = engine
        self.tick_s = tick_s
        self.keep_days = keep_days
        self.keep_count = keep_count
        self._live: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="appliance-ingest")
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._due: Callable[[], object] | None = None
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
        self.prune()

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
    ) -> Job:
        job = Job(uuid.uuid4().hex[:16], kind, actor, collection, source_id, detail or {})
        last = [0.0]

        def persist_now_and_then(event: str, item: Any, state: IngestProgress) -> None:
            if time.monotonic() - last[0] >= PERSIST_EVERY_S:
                last[0] = time.monotonic()
                self._persist(job)

        job.progress.listener = persist_now_and_then
        with self._lock:
            self._live[job.id] = job
        with self.engine.begin() as conn:
            conn.execute(insert(jobs_table).values(**self._row(job)))
        self._executor.submit(self._run, job, work)
        return job

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
        row = self._row(job)
        row.pop("id")
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

    def active_for_collection(self, collection: str) -> bool:
        with self._lock:
            return any(j.collection == collection and j.status in ACTIVE for j in self._live.values())

    def active_for_source(self, source_id: str) -> bool:
        with self._lock:
            return any(j.source_id == source_id and j.status in ACTIVE for j in self._live.values())

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            job = self._live.get(job_id)
        if job is None:
            self.get(job_id)  # NotFound when unknown
            return self.get(job_id)
        if job.status in ACTIVE:
            job.cancel.set()
            if job.status == "queued":
                job.status = "cancelled"
                job.finished_at = now()
                self._persist(job)
                job.finished.set()
        return job.as_dict()

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
