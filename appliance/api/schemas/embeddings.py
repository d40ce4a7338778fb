"""OpenAI embeddings request and response."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EmbeddingRequest(BaseModel):
    input: str | list[str] = Field(description="Text or texts to embed.")
    model: str | None = Field(None, description="The embedding model; GET /v1/models lists it.")
    encoding_format: Literal["float", "base64"] = Field("float", description="float lists or base64 float32.")
    user: str | None = None


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
