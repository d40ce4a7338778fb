"""Knowledge-base API shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from appliance.api.schemas.openai import Citation
from appliance.vectorstore.base import SearchFilter


class SearchFilters(BaseModel):
    """Narrow a search; every given field must hold. Access rules always apply on top."""

    model_config = {"extra": "forbid"}

    document_ids: list[str] = Field(default_factory=list, max_length=1000, description="Document ids.")
    uris: list[str] = Field(default_factory=list, max_length=1000, description="Document URIs.")
    sources: list[str] = Field(
        default_factory=list, max_length=100, description="Ingested sources (the folder or bucket URI)."
    )
    modified_after: datetime | None = Field(None, description="Documents changed at or after this time.")
    modified_before: datetime | None = Field(None, description="Documents changed at or before this time.")

    def to_filter(self) -> SearchFilter:
        return SearchFilter(
            document_ids=tuple(self.document_ids),
            uris=tuple(self.uris),
            sources=tuple(self.sources),
            modified_after=_epoch(self.modified_after),
            modified_before=_epoch(self.modified_before),
        )


def _epoch(value: datetime | None) -> float | None:
    # A time without a zone is taken as UTC, the zone the appliance records times in.
    if value is None:
        return None
    from datetime import UTC

    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=8000)
    collection: str | None = None
    k: int = Field(5, ge=1, le=100)
    filters: SearchFilters | None = None
    mode: Literal["hybrid", "dense", "bm25"] = Field(
        "hybrid", description="`hybrid` (dense + BM25, RRF), or one side alone."
    )


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
