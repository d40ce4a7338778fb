"""Ask API shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from appliance.api.schemas.openai import Citation


class AskRequest(BaseModel):
    question: str = Field(min_length=1, max_length=8000)
    collection: str | None = None
    k: int | None = Field(None, ge=1, le=50)
    conversation_id: str | None = Field(
        None, description="Continue this conversation of yours; omitted: a new conversation is started."
    )
    answer_mode: Literal["auto", "abstractive", "extractive", "grounded"] | None = Field(
        None,
        description="Override the configured answer mode (`rag.answer_mode`) for this question; "
        "`auto`: the one the model's size calls for.",
    )
    stream: bool = Field(
        False,
        description="Server-sent events: `citations`, then `delta` events, then `done` with this "
        "response's JSON.",
    )


class AskResponse(BaseModel):
    id: str = Field(description="The answer's id (for feedback).")
    conversation_id: str | None
    answer: str
    citations: list[Citation]
    model: str
    usage: dict[str, int]
    timings: dict[str, float]
    mode: str = Field(description="Answer mode used.")
    support: float | None = Field(
        description="Share of the answer's content words its sources contain (0-1); null: no sources."
    )
    fallback: bool = Field(description="The generated answer was replaced by quotes from the sources.")
    query: str = Field(description="What was searched: the question, made standalone if it was a follow-up.")
