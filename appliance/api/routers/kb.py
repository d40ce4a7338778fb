"""Knowledge-base API: search, ingest, audit (ask lives in routers/ask.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

import connectors
from appliance.api.deps import AdminDep, ContainerDep, PrincipalDep
from appliance.api.schemas.kb import (
    AuditVerifyResponse,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
    citation_models,
)
from appliance.ingestion.jobs import run_ingest
from appliance.rag.pipeline import citation_dicts

router = APIRouter(prefix="/api/v1", tags=["knowledge base"])


@router.post("/search", response_model=SearchResponse, summary="Retrieval only")
async def search(req: SearchRequest, container: ContainerDep, principal: PrincipalDep) -> Any:
    hits, ms = await asyncio.to_thread(container.rag.search, req.query, principal, req.collection, req.k)
    return SearchResponse(
        citations=citation_models(citation_dicts(hits)), timings={"retrieval_ms": round(ms, 1)}
    )


@router.post(
    "/ingest", response_model=IngestResponse, summary="Ingest folders or files on the appliance host"
)
async def ingest(req: IngestRequest, container: ContainerDep, principal: AdminDep) -> Any:
    sources = [
        connectors.for_source(s, extensions=container.settings.ingestion.extensions) for s in req.sources
    ]
    report = await asyncio.to_thread(
        run_ingest, container, sources, req.collection, req.allow, principal.name
    )
    return IngestResponse(**report)


@router.get("/audit/verify", response_model=AuditVerifyResponse, summary="Check the audit hash chain")
def audit_verify(container: ContainerDep, _: AdminDep) -> Any:
    return AuditVerifyResponse(**container.audit.verify().as_dict())
