"""Ingestion API: jobs (progress, cancel), sources (+ sync), documents (upload, list, delete,
reindex) and the ledger-vs-index check. Writes need the admin or curator role; document reads
answer only what the caller may read."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from appliance.api.deps import AdminDep, ContainerDep, PrincipalDep
from appliance.api.schemas.ingestion import (
    Document,
    DocumentList,
    Job,
    JobList,
    JobRequest,
    Source,
    SourceList,
    SourceRequest,
    UploadResponse,
    VerifyResponse,
)
from appliance.ingestion.service import require_writer

router = APIRouter(prefix="/api/v1", tags=["ingestion"])


# -- jobs ------------------------------------------------------------------------------------------


@router.post("/jobs", response_model=Job, status_code=202, summary="Start an ingest job")
async def start_job(req: JobRequest, container: ContainerDep, principal: PrincipalDep) -> Any:
    require_writer(principal)
    job = await asyncio.to_thread(
        container.jobs.ingest, principal.name, req.sources, req.collection, req.allow, req.options
    )
    return job.as_dict()


@router.get("/jobs", response_model=JobList, summary="Recent jobs, newest first")
def list_jobs(
    container: ContainerDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    status: str | None = None,
    source_id: str | None = None,
) -> Any:
    require_writer(principal)
    return {"items": container.jobs.manager.list(limit, status, source_id)}


@router.get("/jobs/{job_id}", response_model=Job, summary="A job with its live progress")
def get_job(job_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    require_writer(principal)
    return container.jobs.manager.get(job_id)


@router.post("/jobs/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job")
def cancel_job(job_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    require_writer(principal)
    return container.jobs.manager.cancel(job_id)


# -- sources ---------------------------------------------------------------------------------------


@router.post("/sources", response_model=Source, status_code=201, summary="Register a source")
async def add_source(req: SourceRequest, container: ContainerDep, principal: PrincipalDep) -> Any:
    source = await asyncio.to_thread(
        container.jobs.add_source,
        principal,
        req.kind,
        req.spec,
        req.options,
        req.collection,
        req.allow,
        req.interval_s,
    )
    return source.as_dict()


@router.get("/sources", response_model=SourceList, summary="Registered sources")
def list_sources(container: ContainerDep, principal: PrincipalDep) -> Any:
    require_writer(principal)
    return {"items": [s.as_dict() for s in container.jobs.sources.list()]}


@router.get("/sources/{source_id}", response_model=Source, summary="One source")
def get_source(source_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    require_writer(principal)
    return container.jobs.sources.get(source_id).as_dict()


@router.delete("/sources/{source_id}", status_code=204, summary="Forget a source")
def delete_source(
    source_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    purge: Annotated[bool, Query(description="Also remove its documents from the index.")] = False,
) -> None:
    container.jobs.remove_source(principal, source_id, purge)


@router.post("/sources/{source_id}/sync", response_model=Job, status_code=202, summary="Sync a source now")
def sync_source(source_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    require_writer(principal)
    return container.jobs.sync(source_id, principal.name).as_dict()


# -- documents -------------------------------------------------------------------------------------


@router.post("/documents", response_model=UploadResponse, status_code=202, summary="Upload a document")
async def upload_document(
    container: ContainerDep,
    principal: PrincipalDep,
    file: Annotated[UploadFile, File(description="The document.")],
    collection: Annotated[str | None, Form()] = None,
    allow: Annotated[list[str] | None, Form(description="ACL entries: group:NAME, user:NAME.")] = None,
) -> Any:
    require_writer(principal)
    doc_id, job = await asyncio.to_thread(
        container.jobs.upload, principal, file.file, file.filename, collection, allow or []
    )
    return {"document_id": doc_id, "job": job.as_dict()}


@router.get("/documents", response_model=DocumentList, summary="Documents the caller may read")
def list_documents(
    container: ContainerDep,
    principal: PrincipalDep,
    collection: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    items, total = container.jobs.documents(principal, collection, limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get("/documents/{doc_id}", response_model=Document, summary="One document")
def get_document(doc_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    return container.jobs.document(principal, doc_id)


@router.delete("/documents/{doc_id}", response_model=Document, summary="Remove a document from the index")
def delete_document(doc_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    return container.jobs.delete_document(principal, doc_id)


@router.post(
    "/documents/{doc_id}/reindex", response_model=Job, status_code=202, summary="Parse a document again"
)
def reindex_document(doc_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    return container.jobs.reindex(principal, doc_id).as_dict()


@router.get("/ingest/verify", response_model=VerifyResponse, summary="Ledger vs index consistency")
def verify_index(
    container: ContainerDep,
    _: AdminDep,
    collection: str | None = None,
    repair: bool = False,
) -> Any:
    return container.jobs.verify(collection, repair)
