"""Knowledge-base API shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from appliance.api.schemas.openai import Citation


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    collection: str | None = None
    k: int = Field(5, ge=1, le=100)


class SearchResponse(BaseModel):
    citations: list[Citation]
    timings: dict[str, float]


class IngestRequest(BaseModel):
    sources: list[str] = Field(min_length=1, description="Paths on the appliance host.")
    collection: str | None = None
    allow: list[str] = Field(default_factory=list, description="ACL entries: group:NAME, user:NAME.")


class IngestResponse(BaseModel):
    added: int
    updated: int
    unchanged: int
    deleted: int
    failed: list[dict[str, str]]
    chunks: int
    elapsed_s: float


class AuditVerifyResponse(BaseModel):
    ok: bool
    records: int
    first_bad_line: int | None
    reason: str


def citation_models(citations: list[dict[str, Any]]) -> list[Citation]:
    return [Citation(**c) for c in citations]
