"""What the jobs, sources and documents API (and the CLI) ask of ingestion, in one service.

Writes go through the job queue (one writer); reads come straight from the ledger. Document
reads respect access rules: a document the caller may not read does not exist for them (404).

Writes, sources and jobs belong to collections, and only admins and the curators of a collection's
owner groups manage them (``CollectionService.require_curator``): naming a collection one may not
curate is 403 (404 when one cannot even see it), and another collection's source or job id is 404.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from appliance.domain import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Principal,
    SourceItem,
    document_id,
    validate_collection_name,
)
from appliance.ingestion.connect import check_reach
from appliance.ingestion.jobs import Job, JobManager, is_due, run_ingest
from appliance.ingestion.sources import Source, SourceStore, UploadConnector, build_connector
from appliance.ingestion.state import DocumentRecord
from appliance.ingestion.verify import verify
from appliance.security.acl import can_read as acl_allows
from appliance.security.acl import is_curator

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20
# JobManager.list has no collection filter: a curator's page is filled from ever wider windows.
_JOB_WINDOW_GROWTH = 4


def can_read(principal: Principal, rec: DocumentRecord) -> bool:
    return acl_allows(principal, rec.collection, rec.acl)


def _require_curator_role(principal: Principal) -> None:
    if not is_curator(principal):
        raise Forbidden("this operation needs the curator or admin role")


def document_dict(rec: DocumentRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "collection": rec.collection,
        "uri": rec.uri,
        "title": rec.title,
        "source": rec.source,
        "version": rec.version,
        "content_hash": rec.content_hash,
        "allow": rec.acl,
        "status": rec.status,
        "error": rec.error,
        "chunks": len(rec.chunk_ids),
        "updated_at": rec.updated_at.isoformat() if rec.updated_at else None,
    }


class IngestionJobs:
    def __init__(self, container: Any) -> None:
        self.container = container
        cfg = container.settings.ingestion
        self.extensions = list(cfg.extensions)
        self.max_upload_bytes = int(cfg.max_file_mb * 2**20)
        self.default_interval_s = int(cfg.default_sync_interval_s)
        self.upload_dir = Path(container.data_dir) / "uploads"
        self.sources = SourceStore(container.engine)
        self.manager = JobManager(container.engine, container.audit, cfg.scheduler_tick_s)

    @property
    def ledger(self) -> Any:
        return self.container.ledger

    def _collection(self, name: str | None) -> str:
        return validate_collection_name(name or self.container.settings.rag.default_collection)

    def _curated(self, principal: Principal, name: str | None) -> str:
        """The effective collection name, once the principal may curate it (403/404 otherwise)."""
        collection = self._collection(name)
        self.container.collections.require_curator(principal, collection)
        return collection

    def _source(self, principal: Principal, source_id: str) -> Source:
        _require_curator_role(principal)
        source = self.sources.get(source_id)
        if not self.container.collections.curates(principal, source.collection):
            raise NotFound(f"no source {source_id!r}")  # another collection's source: none of theirs
        return source

    def connector(
        self,
        kind: str,
        spec: str | None,
        options: dict[str, Any] | None = None,
        principal: Principal | None = None,
    ) -> Any:
        """A connector for a source; with ``principal``, also where that caller may point one
        (``connect.check_reach``). Without, the caller is the local admin (CLI) or a stored source."""
        opts = dict(options or {})
        if kind == "upload":
            opts["upload_dir"] = str(self.upload_dir)
        connector = build_connector(self.container.settings, kind, spec, opts)
        if kind != "upload":
            check_reach(self.container.settings, connector, admin=principal is None or principal.is_admin)
        return connector

    def _run(
        self, connectors: list[Any], collection: str, acl: Sequence[str], actor: str, job: Job, **kw: Any
    ) -> dict[str, Any]:
        try:
            return run_ingest(
                self.container, connectors, collection, acl, actor, job.progress, job.cancel, **kw
            )
        finally:
            for connector in connectors:
                getattr(connector, "close", lambda: None)()

    # -- jobs -------------------------------------------------------------------------------------

    def ingest(
        self,
        actor: str,
        specs: Sequence[str],
        collection: str | None,
        acl: Sequence[str],
        options: dict[str, Any] | None = None,
        principal: Principal | None = None,
    ) -> Job:
        """Ingest SOURCE arguments (paths, URLs) as one job; unreachable sources fail now (400),
        and so do sources ``principal`` may not point at (403)."""
        name = self._collection(collection)
        connectors = [self.connector("spec", s, options, principal) for s in specs]

        def work(job: Job) -> dict[str, Any]:
            return self._run(connectors, name, acl, actor, job)

        return self.manager.submit(
            "ingest", actor, name, work, detail={"sources": list(specs), "allow": list(acl)}
        )

    def start_job(
        self,
        principal: Principal,
        specs: Sequence[str],
        collection: str | None,
        acl: Sequence[str],
        options: dict[str, Any] | None = None,
    ) -> Job:
        """``ingest`` on behalf of a caller, who must curate the collection."""
        name = self._curated(principal, collection)
        return self.ingest(principal.name, specs, name, acl, options, principal=principal)

    def delete_collection(self, principal: Principal, name: str) -> dict[str, Any]:
        """Delete a collection with its documents and sources; refused (409) while one of its jobs
        is queued or running, which would write into it again."""
        self.container.collections.require_curator(principal, name)
        if self.manager.active_for_collection(name):
            raise Conflict(f"collection {name!r} has a job queued or running; cancel it or wait")
        return self.container.collections.delete(name, principal)

    def list_jobs(
        self, principal: Principal, limit: int, status: str | None = None, source_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; a curator sees the jobs of the collections it curates only."""
        _require_curator_role(principal)
        if principal.is_admin and principal.collections is None:
            return self.manager.list(limit, status, source_id)
        curates = self.container.collections.curates_any(principal)
        window = limit
        while True:
            rows = self.manager.list(window, status, source_id)
            mine = [j for j in rows if curates(j["collection"])]
            if len(mine) >= limit or len(rows) < window:
                return mine[:limit]
            window *= _JOB_WINDOW_GROWTH

    def get_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        _require_curator_role(principal)
        job = self.manager.get(job_id)
        if not self.container.collections.curates(principal, job["collection"]):
            raise NotFound(f"no job {job_id!r}")  # another collection's job: none of theirs
        return job

    def cancel_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        self.get_job(principal, job_id)
        return self.manager.cancel(job_id)

    def start_scheduler(self) -> None:
        self.manager.start_scheduler(self.run_due)

    def run_due(self) -> list[Job]:
        started = []
        for source in self.sources.list():
            if is_due(source.last_sync_at, source.interval_s) and not self.manager.active_for_source(
                source.id
            ):
                started.append(self.sync(source.id, "scheduler"))
        return started

    # -- sources ------------------------------------------------------------------------------------

    def add_source(
        self,
        principal: Principal,
        kind: str | None,
        spec: str | None,
        options: dict[str, Any],
        collection: str | None,
        acl: Sequence[str],
        interval_s: int | None,
    ) -> Source:
        name = self._curated(principal, collection)
        if not spec and not kind:
            raise InvalidRequest("give either `spec` (a path or URL) or `kind` with `options`")
        connector = self.connector(kind or "spec", spec, options, principal)  # fails now if unreachable
        return self.sources.add(
            kind or getattr(connector, "kind", "filesystem"),
            spec,
            options,
            name,
            acl,
            self.default_interval_s if interval_s is None else interval_s,
        )

    def list_sources(self, principal: Principal) -> list[Source]:
        _require_curator_role(principal)
        curates = self.container.collections.curates_any(principal)
        return [s for s in self.sources.list() if curates(s.collection)]

    def source(self, principal: Principal, source_id: str) -> Source:
        return self._source(principal, source_id)

    def sync_source(self, principal: Principal, source_id: str) -> Job:
        return self.sync(self._source(principal, source_id).id, principal.name)

    def sync(self, source_id: str, actor: str) -> Job:
        """Sync now, as ``actor`` (the scheduler, or a caller already let through)."""
        source = self.sources.get(source_id)

        def work(job: Job) -> dict[str, Any]:
            connector = self.connector(source.kind, source.spec, source.options)
            return self._run([connector], source.collection, source.acl, actor, job)

        job = self.manager.submit(
            "sync", actor, source.collection, work, source_id=source.id, detail={"source": source.as_dict()}
        )
        self.sources.mark_synced(source.id, job.id)
        return job

    def remove_source(self, principal: Principal, source_id: str, purge: bool = False) -> None:
        """Forget a source; with ``purge`` its documents leave the index too."""
        source = self._source(principal, source_id)
        if purge:
            connector = self.connector(source.kind, source.spec, source.options)
            for rec in self.ledger.for_source(source.collection, connector.root):
                self.container.ingestion.remove_document(rec)
        self.sources.remove(source_id)

    # -- documents ----------------------------------------------------------------------------------

    def upload(
        self,
        principal: Principal,
        stream: BinaryIO,
        filename: str | None,
        collection: str | None,
        acl: Sequence[str],
    ) -> tuple[str, Job]:
        name = self._curated(principal, collection)
        connector, path = UploadConnector.store(self.upload_dir, name, filename)
        size = 0
        try:
            with open(path, "wb") as out:
                while block := stream.read(COPY_CHUNK):
                    size += len(block)
                    if size > self.max_upload_bytes:
                        raise PayloadTooLarge(
                            f"file is over the {self.max_upload_bytes / 2**20:g} MiB limit (ingestion.max_file_mb)"
                        )
                    out.write(block)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

        def work(job: Job) -> dict[str, Any]:
            return self._run([connector], name, acl, principal.name, job)

        job = self.manager.submit(
            "upload",
            principal.name,
            name,
            work,
            detail={"filename": connector.filename, "uri": connector.root, "bytes": size, "allow": list(acl)},
        )
        return document_id(name, connector.root), job

    def _readable(self, principal: Principal, doc_id: str) -> DocumentRecord:
        rec = self.ledger.get(doc_id)
        if rec is None or not can_read(principal, rec):
            raise NotFound(f"no document {doc_id!r}")
        return rec  # type: ignore[no-any-return]

    def documents(
        self, principal: Principal, collection: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        records = [r for r in self.ledger.list(collection) if can_read(principal, r)]
        return [document_dict(r) for r in records[offset : offset + limit]], len(records)

    def document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        return document_dict(self._readable(principal, doc_id))

    def _managed(self, principal: Principal, doc_id: str) -> DocumentRecord:
        """A document the principal may read (404 otherwise) in a collection it curates (403)."""
        _require_curator_role(principal)
        rec = self._readable(principal, doc_id)
        self.container.collections.require_curator(principal, rec.collection)
        return rec

    def delete_document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        rec = self._managed(principal, doc_id)
        self.container.ingestion.remove_document(rec)
        if rec.uri.startswith("upload://"):
            try:
                UploadConnector.from_uri(rec.uri, self.upload_dir).remove()
            except InvalidRequest:
                log.warning("not removing the file of %s: unexpected URI", rec.uri)
        return document_dict(rec)

    def reindex(self, principal: Principal, doc_id: str) -> Job:
        rec = self._managed(principal, doc_id)
        kind = "upload" if rec.uri.startswith("upload://") else "spec"

        def work(job: Job) -> dict[str, Any]:
            connector = self.connector(kind, rec.uri if kind == "upload" else rec.source)
            item = _find(connector, rec.uri)
            return self._run(
                [connector], rec.collection, rec.acl, principal.name, job, items=[item], force=True
            )

        return self.manager.submit(
            "reindex", principal.name, rec.collection, work, detail={"document_id": doc_id, "uri": rec.uri}
        )

    def verify(self, collection: str | None = None, repair: bool = False) -> dict[str, Any]:
        return verify(self.ledger, self.container.store, collection, repair)

    def close(self) -> None:
        self.manager.close()


def _find(connector: Any, uri: str) -> SourceItem:
    for item in connector.discover():
        if item.uri == uri:
            return item  # type: ignore[no-any-return]
    raise NotFound(f"{uri} is no longer at its source")
