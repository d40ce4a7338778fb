"""Collection (knowledge base) API shapes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CollectionCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, description="Letters, digits, '-' and '_'.")
    default_acl: list[str] = Field(
        default_factory=list,
        description="Who may read documents ingested without --allow: `*` (every signed-in user), "
        "`group:NAME`, `user:NAME`. Empty: every signed-in user.",
    )
    description: str = Field("", max_length=2000)


class Collection(BaseModel):
    name: str
    default_acl: list[str]
    description: str
    created_at: str | None = Field(description="Null for a collection created by an ingest.")
    documents: int
    chunks: int
