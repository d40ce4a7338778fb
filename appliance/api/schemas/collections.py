"""Collection (knowledge base) API shapes."""

from __future__ import annotations

from pydantic import BaseModel, Field

_OWNERS = (
    "Groups (names, e.g. `hr`) whose curators manage the collection: its sources, uploads, ingests "
    "and jobs. Curators of a sub-group count. Empty: admins only."
)


_WEIGHT = (
    "The BM25 (keyword) side's weight in this collection's hybrid fusion, the dense side weighing 1 "
    "(`appliance eval --tune --apply` finds and sets it). Null: `retrieval.bm25_weight`."
)


class CollectionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="Letters, digits, '-' and '_'.")
    default_acl: list[str] = Field(
        default_factory=list,
        description="Who may read documents ingested without --allow: `*` (every signed-in user), "
        "`group:NAME`, `user:NAME`. Empty: every signed-in user.",
    )
    description: str = Field("", max_length=2000)
    owners: list[str] = Field(
        default_factory=list, description=_OWNERS + " A curator must name one or more of its groups."
    )


class CollectionUpdate(BaseModel):
    owners: list[str] | None = Field(None, description=_OWNERS + " Null: unchanged.")
    description: str | None = Field(None, max_length=2000)
    bm25_weight: float | None = Field(None, ge=0, le=10, description=_WEIGHT + " Absent: unchanged.")


class Collection(BaseModel):
    name: str
    default_acl: list[str]
    owners: list[str] = Field(description=_OWNERS)
    description: str
    bm25_weight: float | None = Field(None, description=_WEIGHT)
    created_at: str | None = Field(description="Null for a collection created by an ingest.")
    documents: int = Field(description="Documents (that you may read, unless you curate it).")
    chunks: int = Field(description="Chunks (of documents you may read, unless you curate it).")
    error: str | None = Field(
        None, description="Why the collection's index cannot be used now (null: it can)."
    )
