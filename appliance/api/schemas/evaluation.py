"""Shapes of POST /api/v1/eval."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class EvalItem(BaseModel):
    model_config = {"extra": "forbid"}

    question: str = Field(..., min_length=1, max_length=4000)
    doc: str = Field(
        ..., min_length=1, max_length=2000, description="Part of the answering document's URI or title."
    )
    answer_any: list[str] = Field(
        default_factory=list, max_length=50, description="Answers that count as right."
    )


class EvalRequest(BaseModel):
    """A golden set given inline (``items``) or by the name of a set stored in
    ``<data dir>/eval/sets/<set>.jsonl``; exactly one of the two."""

    model_config = {"extra": "forbid"}

    items: list[EvalItem] | None = Field(None, min_length=1, max_length=2000)
    set: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name of a set in <data dir>/eval/sets/ (without .jsonl).",
    )
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name in the result file <date>-<name>.json (default: `set`, or `inline`).",
    )
    collection: str | None = Field(None, description="Knowledge base (default: the default collection).")
    k: int = Field(5, ge=1, le=100, description="Results judged per question.")
    mode: Literal["hybrid", "dense", "bm25"] = Field("hybrid", description="Retrieval to judge.")
    generate: bool = Field(
        False, description="Also answer every question with the model and judge answers and citations (slow)."
    )
    baseline: dict[str, Any] | None = Field(
        None,
        description="An earlier result of this endpoint or of `appliance eval` for the same set, k and "
        "mode: the response's `gate` says whether any metric fell more than `max_drop` below it.",
    )
    max_drop: float = Field(0.02, ge=0, le=1, description="Largest drop of any metric the gate lets pass.")

    @model_validator(mode="after")
    def _one_source(self) -> EvalRequest:
        if (self.items is None) == (self.set is None):
            raise ValueError("give either items or set")
        return self


class EvalDrop(BaseModel):
    metric: str
    baseline: float
    current: float
    by: float


class EvalGate(BaseModel):
    baseline: str
    max_drop: float
    passed: bool
    drops: list[EvalDrop]
    newly_missed: list[str]


class EvalItemResult(BaseModel):
    question: str
    doc: str
    rank: int | None = Field(..., description="1-based rank of the first hit within k; null when missed.")
    retrieved: list[str]
    answer: str | None = None
    answer_ok: bool | None = None
    citation_ok: bool | None = None


class EvalResponse(BaseModel):
    questions: int
    k: int
    mode: str
    set: str
    date: str
    retrieval: dict[str, float] = Field(..., description="hit@1, hit@k, mrr.")
    generation: dict[str, float] | None = Field(None, description="answer_contains, citation_correct.")
    items: list[EvalItemResult]
    elapsed_s: float
    result_file: str = Field(..., description="Where the report was written on the server.")
    gate: EvalGate | None = None
