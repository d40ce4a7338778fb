"""Ingestion API: jobs (progress, cancel), sources (+ sync), documents (upload, list, delete,
reindex) and the ledger-vs-index check. Jobs, sources and writes need the curator role and are
scoped by the service to the collections the caller curates (admins: all); document reads answer
only what the caller may read."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from appliance.api.deps import AdminDep, CuratorDep, JobsDep, PrincipalDep
from appliance.api.schemas.common import COMMON_ERRORS, Limit, Offset, error_responses, page
from appliance.api.schemas.ingestion import (
    Document,
    DocumentList,
    Job,
    JobList,
    JobRequest,
    Source,
    SourceList,
    SourceRequest,
    SourceUpdate,
    UploadResponse,
    VerifyResponse,
)

router = APIRouter(prefix="/api/v1", tags=["ingestion"], responses=COMMON_ERRORS)
JOB_HISTORY = 10_000  # newest jobs a job list pages through
# 403: a role that may not curate, or a collection of another group; 404: an id or collection
# the caller cannot see.
CURATED = error_responses(400, 403, 404)


# -- jobs ------------------------------------------------------------------------------------------


@router.post("/jobs", response_model=Job, status_code=202, summary="Start an ingest job", responses=CURATED)
async def start_job(req: JobRequest, jobs: JobsDep, principal: CuratorDep) -> Any:
    job = await asyncio.to_thread(
        jobs.start_job, principal, req.sources, req.collection, req.allow, req.options
    )
    return job.as_dict()


@router.get(
    "/jobs", response_model=JobList, summary="Recent jobs of the collections you curate, newest first"
)
def list_jobs(
    jobs: JobsDep,
    principal: CuratorDep,
    limit: Limit = 50,
    offset: Offset = 0,
    status: str | None = None,
    source_id: str | None = None,
) -> Any:
    # Jobs are many over time: the list counts at most JOB_HISTORY of them, newest first.
    got = page(jobs.list_jobs(principal, JOB_HISTORY, status, source_id), limit, offset)
    return {"items": got.pop("page"), **got}


@router.get("/jobs/{job_id}", response_model=Job, summary="A job with its live progress", responses=CURATED)
def get_job(job_id: str, jobs: JobsDep, principal: CuratorDep) -> Any:
    return jobs.get_job(principal, job_id)


@router.post(
    "/jobs/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job", responses=CURATED
)
def cancel_job(job_id: str, jobs: JobsDep, principal: CuratorDep) -> Any:
    return jobs.cancel_job(principal, job_id)


# -- sources ---------------------------------------------------------------------------------------


@router.post(
    "/sources", response_model=Source, status_code=201, summary="Register a source", responses=CURATED
)
async def add_source(req: SourceRequest, jobs: JobsDep, principal: CuratorDep) -> Any:
    source = await asyncio.to_thread(
        jobs.add_source,
        principal,
        req.kind,
        req.spec,
        req.options,
        req.collection,
        req.allow,
        req.interval_s,
    )
    return source.as_dict()


@router.get("/sources", response_model=SourceList, summary="Registered sources of the collections you curate")
def list_sources(jobs: JobsDep, principal: CuratorDep, limit: Limit = 100, offset: Offset = 0) -> Any:
    got = page([s.as_dict() for s in jobs.list_sources(principal)], limit, offset)
    return {"items": got.pop("page"), **got}


@router.get("/sources/{source_id}", response_model=Source, summary="One source", responses=CURATED)
def get_source(source_id: str, jobs: JobsDep, principal: CuratorDep) -> Any:
    return jobs.source(principal, source_id).as_dict()


@router.patch(
    "/sources/{source_id}", response_model=Source, summary="Change a source in place", responses=CURATED
)
async def update_source(source_id: str, req: SourceUpdate, jobs: JobsDep, principal: CuratorDep) -> Any:
    source = await asyncio.to_thread(
        jobs.update_source,
        principal,
        source_id,
        req.kind,
        req.spec,
        req.options,
        req.collection,
        req.allow,
        req.interval_s,
    )
    return source.as_dict()


@router.delete("/sources/{source_id}", status_code=204, summary="Forget a source", responses=CURATED)
def delete_source(
    source_id: str,
    jobs: JobsDep,
    principal: CuratorDep,
    purge: Annotated[bool, Query(description="Also remove its documents from the index.")] = False,
) -> None:
    jobs.remove_source(principal, source_id, purge)


@router.post(
    "/sources/{source_id}/sync",
    response_model=Job,
    status_code=202,
    summary="Sync a source now",
    responses=CURATED,
)
def sync_source(source_id: str, jobs: JobsDep, principal: CuratorDep) -> Any:
    return jobs.sync_source(principal, source_id).as_dict()


# -- documents -------------------------------------------------------------------------------------


@router.post(
    "/documents",
    response_model=UploadResponse,
    status_code=202,
    summary="Upload a document",
    responses={**CURATED, **error_responses(413)},
)
async def upload_document(
    jobs: JobsDep,
    principal: CuratorDep,
    file: Annotated[UploadFile, File(description="The document.")],
    collection: Annotated[str | None, Form()] = None,
    allow: Annotated[list[str] | None, Form(description="ACL entries: group:NAME, user:NAME.")] = None,
) -> Any:
    doc_id, job = await asyncio.to_thread(
        jobs.upload, principal, file.file, file.filename, collection, allow or []
    )
    return {"document_id": doc_id, "job": job.as_dict()}


@router.get("/documents", response_model=DocumentList, summary="Documents the caller may read")
def list_documents(
    jobs: JobsDep,
    principal: PrincipalDep,
    collection: str | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Any:
    items, total = jobs.documents(principal, collection, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/documents/{doc_id}", response_model=Document, summary="One document", responses=error_responses(404)
)
def get_document(doc_id: str, jobs: JobsDep, principal: PrincipalDep) -> Any:
    return jobs.document(principal, doc_id)


@router.delete(
    "/documents/{doc_id}",
    response_model=Document,
    summary="Remove a document from the index",
    responses=CURATED,
)
def delete_document(doc_id: str, jobs: JobsDep, principal: CuratorDep) -> Any:
    return jobs.delete_document(principal, doc_id)


@router.post(
    "/documents/{doc_id}/reindex",
    response_model=Job,
    status_code=202,
    summary="Parse a document again",
    responses=CURATED,
)
def reindex_document(doc_id: str, jobs: JobsDep, principal: CuratorDep) -> Any:
    return jobs.reindex(principal, doc_id).as_dict()


@router.get("/ingest/verify", response_model=VerifyResponse, summary="Ledger vs index consistency")
def verify_index(
    jobs: JobsDep,
    _: AdminDep,
    collection: str | None = None,
    repair: bool = False,
) -> Any:
    return jobs.verify(collection, repair)
