"""Jobs, sources and documents API shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from appliance.api.schemas.common import Paged


class JobProgress(BaseModel):
    seen: int = Field(description="Items discovered so far.")
    done: int = Field(description="Items finished (added, updated or unchanged).")
    failed: int = Field(description="Items that failed, each with its reason in the result.")
    chunks: int = Field(description="Chunks written.")
    current: str | None = Field(None, description="URI being processed.")
    elapsed_s: float
    rate_docs_s: float
    rate_chunks_s: float
    eta_s: float | None = Field(None, description="Seconds left; null while discovering.")


class Job(BaseModel):
    id: str
    kind: str = Field(description="ingest, sync, upload or reindex.")
    status: str = Field(description="queued, running, succeeded, failed, cancelled or interrupted.")
    actor: str
    collection: str
    source_id: str | None
    detail: dict[str, Any]
    progress: JobProgress
    result: dict[str, Any] | None = Field(None, description="The ingest summary once finished.")
    error: str | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None


class JobList(Paged):
    items: list[Job]


class JobRequest(BaseModel):
    sources: list[str] = Field(min_length=1, description="Paths on the appliance host or URLs.")
    collection: str | None = None
    allow: list[str] = Field(default_factory=list, description="ACL entries: group:NAME, user:NAME.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Connector options for these sources (e.g. query, max_depth)."
    )


class SourceRequest(BaseModel):
    spec: str | None = Field(None, description="A path or URL, as `appliance ingest` takes it.")
    kind: str | None = Field(None, description="Connector kind, with `options` (instead of `spec`).")
    options: dict[str, Any] = Field(default_factory=dict)
    collection: str | None = None
    allow: list[str] = Field(default_factory=list)
    interval_s: int | None = Field(
        None, ge=0, description="Sync every this many seconds inside `serve`; 0 = on request only."
    )


class SourceUpdate(BaseModel):
    """What changes; a field left out keeps its value. Authorised as registering the source."""

    model_config = {"extra": "forbid"}

    spec: str | None = Field(
        None, description='A new path or URL; "" drops it for `kind` with `options`. Given back masked: kept.'
    )
    kind: str | None = Field(None, description="Connector kind, with `options` (when there is no `spec`).")
    options: dict[str, Any] | None = Field(
        None, description="Replace the options; a value given as `***` (masked) keeps the stored secret."
    )
    collection: str | None = None
    allow: list[str] | None = None
    interval_s: int | None = Field(
        None, ge=0, description="Sync every this many seconds; 0 = on request only."
    )


class Source(BaseModel):
    id: str
    kind: str
    spec: str | None
    options: dict[str, Any]
    collection: str
    allow: list[str]
    interval_s: int
    created_at: str | None
    last_sync_at: str | None
    last_job_id: str | None
    registered_by: str | None = Field(
        None,
        description="The user whose reach, as it is at sync time, the source syncs with; null: an admin.",
    )


class SourceList(Paged):
    items: list[Source]


class Document(BaseModel):
    id: str
    collection: str
    uri: str
    title: str
    source: str | None = Field(description="Where it came from; only for who manages its collection.")
    version: str
    content_hash: str
    allow: list[str] = Field(
        description="Its readers (ACL); who does not manage its collection sees only the entries "
        "that grant them access."
    )
    status: str = Field(description="indexed, failed or pending.")
    error: str | None
    chunks: int
    updated_at: str | None


class DocumentList(BaseModel):
    items: list[Document]
    total: int
    limit: int
    offset: int


class UploadResponse(BaseModel):
    document_id: str
    job: Job


class VerifyResponse(BaseModel):
    ok: bool
    collections: dict[str, dict[str, Any]]
