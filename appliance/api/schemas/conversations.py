"""Conversation and feedback API shapes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from appliance.api.schemas.common import PageOf
from appliance.api.schemas.openai import Citation


class ConversationCreate(BaseModel):
    title: str = Field("", max_length=200, description="Empty: the first question becomes the title.")
    collection: str | None = None


class ConversationRename(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class Conversation(BaseModel):
    id: str
    title: str
    collection: str | None
    created_at: str
    updated_at: str
    turns: int


class Turn(BaseModel):
    id: str = Field(description="The answer's id (for feedback).")
    conversation_id: str | None
    question: str
    query: str
    answer: str
    citations: list[Citation]
    support: float | None
    mode: str
    fallback: bool
    model: str
    created_at: str


class ConversationDetail(Conversation):
    messages: PageOf[Turn] = Field(description="The turns, oldest first, paginated.")


class FeedbackCreate(BaseModel):
    answer_id: str = Field(
        min_length=1, max_length=64, description="An answer's id (`id` of ask, `answer_id` of chat)."
    )
    rating: Literal["up", "down"]
    comment: str | None = Field(None, max_length=4000)


class Feedback(BaseModel):
    id: int
    answer_id: str
    user: str
    rating: str
    comment: str | None
    created_at: str
    question: str | None = None
    answer: str | None = None
    support: float | None = None
    mode: str | None = None
    chunks: list[str] = Field(
        default_factory=list, description="Ids of the chunks retrieved for the rated answer, best first."
    )
