"""What the jobs, sources and documents API (and the CLI) ask of ingestion, in one service.

Writes go through the job queue (one writer); reads come straight from the ledger. Document
reads respect access rules: a document the caller may not read does not exist for them (404).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from appliance.domain import (
    EVERYONE,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Principal,
    SourceItem,
    document_id,
    validate_collection_name,
)
from appliance.ingestion.jobs import Job, JobManager, is_due, run_ingest
from appliance.ingestion.sources import Source, SourceStore, UploadConnector, build_connector
from appliance.ingestion.state import DocumentRecord
from appliance.ingestion.verify import verify

log = logging.getLogger(__name__)

WRITER_ROLES = ("admin", "curator")
COPY_CHUNK = 1 << 20


def require_writer(principal: Principal) -> None:
    if principal.role not in WRITER_ROLES:
        raise Forbidden("this operation needs the admin or curator role")


def can_read(principal: Principal, rec: DocumentRecord) -> bool:
    scoped = getattr(principal, "collections", None)  # an API key limited to some collections
    if scoped is not None and rec.collection not in scoped:
        return False
    return principal.is_admin or bool(set(rec.acl or [EVERYONE]) & set(principal.acl_tokens()))


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

    def connector(self, kind: str, spec: str | None, options: dict[str, Any] | None = None) -> Any:
        opts = dict(options or {})
        if kind == "upload":
            opts["upload_dir"] = str(self.upload_dir)
        return build_connector(self.container.settings, kind, spec, opts)

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
    ) -> Job:
        """Ingest SOURCE arguments (paths, URLs) as one job; unreachable sources fail now (400)."""
        name = self._collection(collection)
        connectors = [self.connector("spec", s, options) for s in specs]

        def work(job: Job) -> dict[str, Any]:
            return self._run(connectors, name, acl, actor, job)

        return self.manager.submit(
            "ingest", actor, name, work, detail={"sources": list(specs), "allow": list(acl)}
        )

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
        require_writer(principal)
        if not spec and not kind:
            raise InvalidRequest("give either `spec` (a path or URL) or `kind` with `options`")
        connector = self.connector(kind or "spec", spec, options)  # fails now if unreachable
        return self.sources.add(
            kind or getattr(connector, "kind", "filesystem"),
            spec,
            options,
            self._collection(collection),
            acl,
            self.default_interval_s if interval_s is None else interval_s,
        )

    def sync(self, source_id: str, actor: str) -> Job:
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
        require_writer(principal)
        source = self.sources.get(source_id)
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
        require_writer(principal)
        name = self._collection(collection)
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

    def delete_document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        require_writer(principal)
        rec = self._readable(principal, doc_id)
        self.container.ingestion.remove_document(rec)
        if rec.uri.startswith("upload://"):
            try:
                UploadConnector.from_uri(rec.uri, self.upload_dir).remove()
            except InvalidRequest:
                log.warning("not removing the file of %s: unexpected URI", rec.uri)
        return document_dict(rec)

    def reindex(self, principal: Principal, doc_id: str) -> Job:
        require_writer(principal)
        rec = self._readable(principal, doc_id)
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
