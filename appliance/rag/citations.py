"""Citation objects: each maps an answer's [n] to document, page/section, chunk, score and snippet."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from appliance.domain import Citation, ScoredChunk
from appliance.rag import grounding


def snippet(text: str, query: str = "", limit: int = 240) -> str:
    """The sentence of ``text`` sharing most words with ``query`` (the opening when none does)."""
    sentences = grounding.split_sentences(text)
    if not sentences:
        return text[:limit]
    best = sentences[0]
    if query:
        q = grounding.bag(query)
        scored = [(len(q & grounding.bag(s)), -i, s) for i, s in enumerate(sentences)]
        top = max(scored)
        if top[0] > 0:
            best = top[2]
    return best if len(best) <= limit else best[: limit - 1].rstrip() + "…"


def citation_dicts(hits: list[ScoredChunk], query: str = "") -> list[dict[str, Any]]:
    """Hits as citation objects, numbered from 1 in rank order (the numbering the prompt uses)."""
    return [
        asdict(Citation.from_hit(i, h, snippet(h.chunk.text, query))) for i, h in enumerate(hits, start=1)
    ]


def mark_cited(citations: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    """Flag the citations the answer actually refers to with ``cited``."""
    used = set(grounding.cited_indices(answer))
    return [{**c, "cited": c["index"] in used} for c in citations]
