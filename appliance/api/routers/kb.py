"""Knowledge-base API: search, ingest, audit (ask lives in routers/ask.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from appliance.api.deps import AdminDep, AuditDep, JobsDep, PrincipalDep, RagDep
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.api.schemas.kb import (
    AuditVerifyResponse,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
    citation_models,
)
from appliance.domain import ApplianceError
from appliance.rag.pipeline import citation_dicts

router = APIRouter(
    prefix="/api/v1", tags=["knowledge base"], responses={**COMMON_ERRORS, **error_responses(400, 403, 404)}
)


@router.post("/search", response_model=SearchResponse, summary="Retrieval only")
async def search(req: SearchRequest, rag: RagDep, principal: PrincipalDep) -> Any:
    flt = req.filters.to_filter() if req.filters else None
    hits, ms = await asyncio.to_thread(
        rag.search_and_audit, req.query, principal, req.collection, req.k, flt, req.mode
    )
    return SearchResponse(
        citations=citation_models(citation_dicts(hits)), timings={"retrieval_ms": round(ms, 1)}
    )


@router.post(
    "/ingest", response_model=IngestResponse, summary="Ingest sources: host paths, web sites, S3, git, SQL"
)
async def ingest(req: IngestRequest, jobs: JobsDep, principal: AdminDep) -> Any:
    # Through the job queue, so this never writes beside a running job; the caller waits for it.
    job = await asyncio.to_thread(
        jobs.start_job, principal, req.sources, req.collection, req.allow, req.options
    )
    done = await asyncio.to_thread(jobs.manager.wait, job.id)
    if done["status"] != "succeeded":
        raise ApplianceError(done["error"] or f"ingest job {job.id} {done['status']}")
    return IngestResponse(**done["result"])


@router.get("/audit/verify", response_model=AuditVerifyResponse, summary="Check the audit hash chain")
def audit_verify(audit: AuditDep, _: AdminDep) -> Any:
    return AuditVerifyResponse(**audit.verify().as_dict())
