"""Knowledge-base API shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from appliance.api.schemas.openai import Citation


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=8000)
    collection: str | None = None
    k: int | None = Field(None, ge=1, le=50)


class AskResponse(BaseModel):
    answer: str
    citations: list[Citation]
    model: str
    usage: dict[str, int]
    timings: dict[str, float]


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    collection: str | None = None
    k: int = Field(5, ge=1, le=100)


class SearchResponse(BaseModel):
    citations: list[Citation]
    timings: dict[str, float]


class IngestRequest(BaseModel):
    sources: list[str] = Field(
        min_length=1,
        description="SOURCE strings as on the CLI: paths on the appliance host, http(s)://, s3://, "
        "git+URL, SQL URLs.",
    )
    collection: str | None = None
    allow: list[str] = Field(default_factory=list, description="ACL entries: group:NAME, user:NAME.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Connector options for these sources (e.g. query, max_depth)."
    )


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
