"""OpenAI-compatible request and response shapes (the subset we serve, plus ``citations``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

# A question is at most 8000 characters on /api/v1/ask; a chat turn may carry a longer system
# prompt or pasted history, but not unbounded text for the tokenizer and the audit log.
MAX_MESSAGE_CHARS = 32_000
MAX_MESSAGES = 256


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = Field(
        None, description=f"At most {MAX_MESSAGE_CHARS} characters."
    )

    @model_validator(mode="after")
    def _bounded(self) -> ChatMessage:
        if len(self.text()) > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message holds at most {MAX_MESSAGE_CHARS} characters")
        return self

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model: str | None = Field(None, description="A served model name, or a knowledge-base collection name.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(None, ge=1, le=8192)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    user: str | None = None
    conversation_id: str | None = Field(
        None, description="Extension: record this turn in one of your conversations (and use its history)."
    )
    answer_mode: Literal["auto", "abstractive", "extractive", "grounded"] | None = Field(
        None,
        description="Extension: override the appliance's answer mode for this request (wins over "
        "a `:<mode>` suffix of `model`).",
    )

    model_config = {"extra": "allow"}


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Citation(BaseModel):
    index: int = Field(description="The n of [n] in the answer.")
    title: str
    uri: str
    page: int | None = None
    chunk_id: str
    score: float = Field(description="Retrieval score (RRF of dense and BM25 ranks).")
    text: str = Field(description="The chunk's full text, as the model was shown it.")
    document_id: str = ""
    section: str | None = None
    snippet: str = Field("", description="The sentence of the chunk that best matches the question.")
    cited: bool = Field(False, description="The answer refers to this source.")


class ChatChoice(BaseModel):
    index: int = 0
    message: dict[str, Any]
    finish_reason: str = "stop"


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[Citation] = []
    answer_id: str = Field("", description="Id for POST /api/v1/feedback.")
    conversation_id: str | None = None
    support: float | None = Field(None, description="Share of the answer its sources back (0-1).")
    answer_mode: str = ""
    fallback: bool = Field(False, description="The generated answer was replaced by quotes from the sources.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "kb-appliance"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
