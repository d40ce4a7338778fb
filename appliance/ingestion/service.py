"""What the jobs, sources and documents API (and the CLI) ask of ingestion, in one service.

Writes go through the job queue (one writer); reads come straight from the ledger. A job is a
JSON payload (``appliance.ingestion.work`` turns it into the work), so the same job runs on this process's writer
thread or, in scale mode, on a Celery worker (``execute``). Document
reads respect access rules: a document the caller may not read does not exist for them (404).

Writes, sources and jobs belong to collections, and only admins and the curators of a collection's
owner groups manage them (``CollectionService.require_curator``): naming a collection one may not
curate is 403 (404 when one cannot even see it), and another collection's source or job id is 404.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from appliance.audit import AuditEvent
from appliance.domain import (
    LOCAL_ADMIN,
    MAX_FILE_SETTING,
    Conflict,
    Connector,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Principal,
    SourceItem,
    document_id,
    validate_collection_name,
)
from appliance.ingestion.connect import ConnectorFactory
from appliance.ingestion.jobs import ACTIVE, Job, JobManager, is_due
from appliance.ingestion.pipeline import IngestProgress, IngestReport, Progress
from appliance.ingestion.sources import Source, SourceStore
from appliance.ingestion.state import DocumentRecord, Ledger
from appliance.ingestion.uploads import orphaned_files, require_own_upload, upload_collection
from appliance.ingestion.verify import verify
from appliance.ingestion.work import ingest_payload, job_work
from appliance.security.acl import can_read as acl_allows
from appliance.security.acl import filter_tokens, is_curator
from appliance.security.identity import Disabled
from appliance.security.secrets import MASK, redact

if TYPE_CHECKING:
    from appliance.audit import AuditLog
    from appliance.collections import CollectionService
    from appliance.ingestion.pipeline import IngestionService
    from appliance.security.identity import IdentityStore
    from appliance.vectorstore.base import VectorStore
    from connectors.upload import UploadConnector

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20
# JobManager.list has no collection filter: a curator's page is filled from ever wider windows.
_JOB_WINDOW_GROWTH = 4
_ACTIVE_UPLOADS = 10_000  # queued or running upload jobs looked at when cleaning stray files


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


def document_view(rec: DocumentRecord, principal: Principal, manages: bool) -> dict[str, Any]:
    """A document as this caller may see it: whole for those who manage its collection (admins,
    its curators); for other readers, no source spec and of the ACL only the entries that grant
    them access (not who else may read it)."""
    shown = document_dict(rec)
    if not manages:
        mine = set(principal.acl_tokens())
        shown["allow"] = [a for a in rec.acl if a in mine]
        shown["source"] = None
    return shown


class IngestionJobs:
    """Jobs, sources and documents, on the services they use (the container builds it)."""

    def __init__(
        self,
        *,
        manager: JobManager,
        sources: SourceStore,
        connectors: ConnectorFactory,
        ingestion: IngestionService,
        ledger: Ledger,
        collections: CollectionService,
        store: VectorStore,
        audit: AuditLog,
        default_collection: str,
        default_interval_s: int,
        identity: IdentityStore | None = None,
    ) -> None:
        self.manager = manager
        self.identity = identity  # who registered a source, as they are now (its syncs' reach)
        self.sources = sources
        self.connectors = connectors
        self.ingestion = ingestion
        self.ledger = ledger
        self.collections = collections
        self.store = store
        self.audit = audit
        self.default_collection = default_collection
        self.default_interval_s = default_interval_s

    def _collection(self, name: str | None) -> str:
        return validate_collection_name(name or self.default_collection)

    def _curated(self, principal: Principal, name: str | None) -> str:
        """The effective collection name, once the principal may curate it (403/404 otherwise)."""
        collection = self._collection(name)
        self.collections.require_curator(principal, collection)
        return collection

    def _source(self, principal: Principal, source_id: str) -> Source:
        _require_curator_role(principal)
        source = self.sources.get(source_id)
        if not self.collections.curates(principal, source.collection):
            raise NotFound(f"no source {source_id!r}")  # another collection's source: none of theirs
        return source

    def connector(
        self,
        kind: str,
        spec: str | None,
        options: dict[str, Any] | None = None,
        principal: Principal | None = None,
    ) -> Connector:
        """A connector for a SOURCE string (``spec``) or a kind with a caller's options; with
        ``principal``, only where that caller may point one (``ConnectorFactory.check_reach``).
        Without, the caller is the local admin (CLI). Uploads are never a caller's source: an
        ``upload://`` URI names another collection's file as well as one's own."""
        admin = _admin_reach(principal)
        if spec:
            return self.connectors.for_source(spec, options, admin=admin)
        return self.connectors.for_kind(kind, options or {}, admin=admin)

    def stored(self, source: Source, as_registrant: bool = True) -> Connector:
        """The connector of a registered source, with the reach of the user who registered it as
        that user is now (``registrant_is_admin``); without ``as_registrant``, an admin's (to find
        its documents when it is removed). An upload registered as a source before that was
        refused syncs only into its own collection."""
        if source.kind == "upload":
            require_own_upload(str(source.options.get("uri", "")), source.collection)
        admin = self.registrant_is_admin(source) if as_registrant else True
        if source.spec:
            return self.connectors.for_source(source.spec, source.options, admin=admin)
        return self.connectors.rebuild(source.kind, source.options, admin=admin)

    def registrant_is_admin(self, source: Source) -> bool:
        """Whether a source syncs with an admin's reach (else a curator's), checked at every sync:
        a registrant since deleted, disabled, demoted or no longer curating the collection makes
        the sync fail with that reason (403) instead of running with a reach they lost."""
        name = source.created_by
        if name is None or self.identity is None:
            return True  # the CLI's local administrator, or registered before registrants were kept
        try:
            registrant = self.identity.principal(name)
        except Disabled as exc:
            raise Forbidden(
                f"source {source.id} syncs with the reach of {name!r}, who registered it: {exc.message}; "
                "an admin or a curator of the collection may register it again"
            ) from exc
        except NotFound as exc:
            if name == LOCAL_ADMIN.name:
                return True  # the configured admin key and the CLI act as "admin" without a user row
            raise Forbidden(
                f"source {source.id} syncs with the reach of {name!r}, who registered it: {exc.message}; "
                "an admin or a curator of the collection may register it again"
            ) from exc
        if registrant.is_admin:
            return True
        if not is_curator(registrant) or not self.collections.curates(registrant, source.collection):
            raise Forbidden(
                f"source {source.id} syncs with the reach of {name!r}, who registered it and no longer "
                f"curates collection {source.collection!r}; an admin or a curator of the collection may "
                "register it again"
            )
        return False

    def run(
        self,
        connectors: Sequence[Connector],
        collection: str | None,
        acl: Sequence[str],
        actor: str,
        progress: IngestProgress | Progress | None = None,
        cancel: threading.Event | None = None,
        items: Iterable[SourceItem] | None = None,
        force: bool = False,
    ) -> dict[str, Any]:
        """Ingest ``connectors`` into one collection (the default one when None), in the calling
        thread, and audit it; the connectors are closed afterwards. Returns the summary dict.
        ``items``: only those (of the one connector given) are reindexed, nothing is deleted."""
        try:
            name = self._collection(collection)
            if progress is None or not isinstance(progress, IngestProgress):
                progress = IngestProgress(listener=progress)
            # Readers, most specific first: --allow for the whole run, then what the source says of
            # an item (S3 object metadata, an ACL column), then the collection's default readers.
            default_acl = self.collections.default_acl(name)
            total = IngestReport()
            for connector in connectors:
                report = self.ingestion.ingest(
                    connector,
                    name,
                    acl=acl,
                    default_acl=default_acl,
                    progress=progress,
                    cancel=cancel,
                    items=items,
                    force=force,
                )
                _accumulate(total, report)
                if report.cancelled:
                    break
        finally:
            for connector in connectors:
                connector.close()
        summary = total.as_dict()
        if total.cancelled:
            summary["cancelled"] = True
        detail = {"sources": [redact(c.root) for c in connectors], "acl": list(acl), **summary}
        self.audit.append(AuditEvent(actor, "ingest", name, detail))
        return summary

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
        for spec in specs:
            self.connector("spec", spec, options, principal).close()  # fails now, not in the job
        payload = ingest_payload(self.sources.box, specs, options, _admin_reach(principal), acl)
        return self._submit(
            "ingest", actor, name, payload, detail={"sources": redact(list(specs)), "allow": list(acl)}
        )

    # -- what a job does --------------------------------------------------------------------------

    def _submit(
        self,
        kind: str,
        actor: str,
        collection: str,
        payload: dict[str, Any],
        source_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Job:
        return self.manager.submit(
            kind,
            actor,
            collection,
            job_work(self, payload),
            source_id=source_id,
            detail=detail,
            payload=payload,
        )

    def execute(
        self, job_id: str, payload: dict[str, Any], heartbeat: Callable[[], bool] | None = None
    ) -> dict[str, Any]:
        """Run a queued job in this process (``appliance worker``)."""
        return self.manager.execute(job_id, job_work(self, payload), heartbeat)

    def is_active(self, job_id: str) -> bool:
        return self.manager.is_active(job_id)

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
        self.collections.require_curator(principal, name)
        if self.manager.active_for_collection(name):
            raise Conflict(f"collection {name!r} has a job queued or running; cancel it or wait")
        return self.collections.delete(name, principal)

    def list_jobs(
        self, principal: Principal, limit: int, status: str | None = None, source_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first; a curator sees the jobs of the collections it curates only."""
        _require_curator_role(principal)
        if principal.is_admin and principal.collections is None:
            return self.manager.list(limit, status, source_id)
        curates = self.collections.curates_any(principal)
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
        if not self.collections.curates(principal, job["collection"]):
            raise NotFound(f"no job {job_id!r}")  # another collection's job: none of theirs
        return job

    def cancel_job(self, principal: Principal, job_id: str) -> dict[str, Any]:
        self.get_job(principal, job_id)
        return self.manager.cancel(job_id)

    def start_scheduler(self) -> None:
        self.recover_uploads()
        self.manager.start_scheduler(self.run_due)

    def recover_uploads(self) -> list[Job]:
        """At start: the upload jobs the last process did not finish run again from their stored
        files, and files that no document or job will ever read (an upload cut off while it was
        received, a job lost with its process) are removed."""
        retried = []
        for old in self.manager.interrupted:
            detail = old["detail"] or {}
            if old["kind"] != "upload" or not isinstance(detail.get("uri"), str):
                continue
            try:
                connector = self.connectors.upload(detail["uri"])
            except InvalidRequest:
                continue
            if connector.path.is_file():
                acl = [str(a) for a in detail.get("allow") or []]
                size = connector.path.stat().st_size
                retried.append(self._submit_upload(connector, old["collection"], acl, old["actor"], size))
                log.info("retrying the interrupted upload %s as job %s", connector.root, retried[-1].id)
        kept = self.ledger.upload_uris() | {job.detail["uri"] for job in retried}
        # Uploads still queued or running (on a worker, in scale mode) read theirs yet.
        kept |= {
            str(job["detail"].get("uri"))
            for status in ACTIVE
            for job in self.manager.list(_ACTIVE_UPLOADS, status)
            if job["kind"] == "upload"
        }
        for path in orphaned_files(self.connectors, kept):
            log.warning("removing %s: an upload that no document or job reads", path)
            path.unlink(missing_ok=True)
        return retried

    def run_due(self) -> list[Job]:
        """Sync the sources that are due. Every API replica ticks; ``claim_sync`` (a compare-and-set
        on the source's last sync time) lets exactly one of them start each due sync."""
        started = []
        for source in self.sources.list():
            if (
                is_due(source.last_sync_at, source.interval_s)
                and not self.manager.active_for_source(source.id)
                and self.sources.claim_sync(source)
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
        connector.close()
        return self.sources.add(
            kind or connector.kind,
            spec,
            options,
            name,
            acl,
            self.default_interval_s if interval_s is None else interval_s,
            created_by=principal.name,
        )

    def update_source(
        self,
        principal: Principal,
        source_id: str,
        kind: str | None = None,
        spec: str | None = None,
        options: dict[str, Any] | None = None,
        collection: str | None = None,
        acl: Sequence[str] | None = None,
        interval_s: int | None = None,
    ) -> Source:
        """Change a registered source in place; what is not given (None) stays. Its id, last sync
        and jobs stay too. Authorised as adding it: the caller curates the source's collection
        and the new one, and the connector is rebuilt now with the caller's reach; the caller
        becomes its registrant (its syncs have the caller's reach from now on). ``spec=""`` drops
        the path or URL for ``kind`` with ``options``; ``options`` replace the stored ones, except
        a value shown masked (``***``, as ``Source.as_dict`` shows secrets), which keeps its
        stored secret, as does a spec given back as it was shown."""
        old = self._source(principal, source_id)
        name = self._curated(principal, collection or old.collection)
        new_spec = old.spec if spec is None or spec == redact(old.spec) else spec.strip() or None
        new_options = dict(old.options)
        if options is not None:
            new_options = {
                k: old.options[k] if v == MASK and k in old.options else v for k, v in options.items()
            }
        new_kind = None if new_spec else (kind or old.kind)
        connector = self.connector(new_kind or "spec", new_spec, new_options, principal)
        connector.close()
        return self.sources.update(
            source_id,
            new_kind or connector.kind,
            new_spec,
            new_options,
            name,
            old.acl if acl is None else list(acl),
            old.interval_s if interval_s is None else interval_s,
            created_by=principal.name,
        )

    def list_sources(self, principal: Principal) -> list[Source]:
        _require_curator_role(principal)
        curates = self.collections.curates_any(principal)
        return [s for s in self.sources.list() if curates(s.collection)]

    def source(self, principal: Principal, source_id: str) -> Source:
        return self._source(principal, source_id)

    def sync_source(self, principal: Principal, source_id: str) -> Job:
        return self.sync(self._source(principal, source_id).id, principal.name)

    def sync(self, source_id: str, actor: str) -> Job:
        """Sync now, as ``actor`` (the scheduler, or a caller already let through)."""
        source = self.sources.get(source_id)
        job = self._submit(
            "sync",
            actor,
            source.collection,
            {"op": "sync", "source_id": source.id},
            source_id=source.id,
            detail={"source": source.as_dict()},
        )
        self.sources.mark_synced(source.id, job.id)
        return job

    def remove_source(self, principal: Principal, source_id: str, purge: bool = False) -> None:
        """Forget a source; with ``purge`` its documents leave the index too."""
        source = self._source(principal, source_id)
        if purge:
            connector = self.stored(source, as_registrant=False)
            connector.close()
            for rec in self.ledger.for_source(source.collection, connector.root):
                self.ingestion.remove_document(rec)
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
        connector = self.connectors.new_upload(name, filename)
        limit = self.connectors.max_file_bytes
        size = 0
        try:
            with open(connector.path, "wb") as out:
                while block := stream.read(COPY_CHUNK):
                    size += len(block)
                    if size > limit:
                        raise PayloadTooLarge(
                            f"file is over the {limit / 2**20:g} MiB limit ({MAX_FILE_SETTING})"
                        )
                    out.write(block)
        except BaseException:
            connector.remove()
            raise

        job = self._submit_upload(connector, name, acl, principal.name, size)
        return document_id(name, connector.root), job

    def _submit_upload(
        self, connector: UploadConnector, name: str, acl: Sequence[str], actor: str, size: int
    ) -> Job:
        return self._submit(
            "upload",
            actor,
            name,
            {"op": "upload", "uri": connector.root, "acl": list(acl)},
            detail={"filename": connector.filename, "uri": connector.root, "bytes": size, "allow": list(acl)},
        )

    def _readable(self, principal: Principal, doc_id: str) -> DocumentRecord:
        rec = self.ledger.get(doc_id)
        if rec is None or not can_read(principal, rec):
            raise NotFound(f"no document {doc_id!r}")
        return rec

    def documents(
        self, principal: Principal, collection: str | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of the documents the principal may read, paged in SQL, each shown as
        ``document_view`` says."""
        records, total = self.ledger.page(
            collection, filter_tokens(principal), principal.collections, limit, offset
        )
        curates = self.collections.curates_any(principal)
        return [
            document_view(r, principal, curates(r.collection)) for r in records if can_read(principal, r)
        ], total

    def document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        rec = self._readable(principal, doc_id)
        return document_view(rec, principal, self.collections.curates(principal, rec.collection))

    def _managed(self, principal: Principal, doc_id: str) -> DocumentRecord:
        """A document the principal may read (404 otherwise) in a collection it curates (403)."""
        _require_curator_role(principal)
        rec = self._readable(principal, doc_id)
        self.collections.require_curator(principal, rec.collection)
        return rec

    def delete_document(self, principal: Principal, doc_id: str) -> dict[str, Any]:
        rec = self._managed(principal, doc_id)
        self.ingestion.remove_document(rec)
        if rec.uri.startswith("upload://"):
            # The file is the upload's own collection's: a copy indexed elsewhere (registered as a
            # source before that was refused) never unlinks it, and while another record still
            # indexes the file, it stays.
            others = [r for r in self.ledger.with_uri(rec.uri) if r.id != rec.id]
            if upload_collection(rec.uri) != rec.collection or others:
                log.info("keeping the file of %s: it is not this document's alone", rec.uri)
            else:
                try:
                    self.connectors.upload(rec.uri).remove()
                except InvalidRequest:
                    log.warning("not removing the file of %s: unexpected URI", rec.uri)
        return document_dict(rec)

    def reindex(self, principal: Principal, doc_id: str) -> Job:
        rec = self._managed(principal, doc_id)

        if rec.uri.startswith("upload://"):
            require_own_upload(rec.uri, rec.collection)
        return self._submit(
            "reindex",
            principal.name,
            rec.collection,
            {"op": "reindex", "document_id": doc_id},
            detail={"document_id": doc_id, "uri": rec.uri},
        )

    def verify(self, collection: str | None = None, repair: bool = False) -> dict[str, Any]:
        return verify(self.ledger, self.store, collection, repair)

    def close(self) -> None:
        self.manager.close()


def _admin_reach(principal: Principal | None) -> bool:
    """Whether a caller's connectors get an admin's reach (None: the CLI's local admin). An admin
    key scoped to collections is an admin inside those only: where its sources may point is a
    curator's reach, or it could send the appliance's credentials anywhere."""
    return principal is None or (principal.is_admin and principal.collections is None)


def _accumulate(total: IngestReport, report: IngestReport) -> None:
    for name in ("added", "updated", "unchanged", "deleted", "chunks", "reused"):
        setattr(total, name, getattr(total, name) + getattr(report, name))
    total.failed.extend(report.failed)
    total.elapsed_s += report.elapsed_s
    total.cancelled = total.cancelled or report.cancelled
