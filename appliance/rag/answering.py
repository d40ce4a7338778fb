"""The three ways to turn the packed sources into an answer, each an async stream of text pieces.

- ``abstractive``: the model's tokens as they come.
- ``extractive``: the sentences of the sources that best answer the question, cited; no model.
- ``grounded``: the model's answer released sentence by sentence, each only when the sources back
  it (its citation repaired to the source that does); when none is backed, the extractive answer,
  with a notice saying so. Streaming is per sentence instead of per token: that is the price of
  never showing a claim that is then taken back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from appliance.domain import ScoredChunk
from appliance.inference.base import GenerationParams
from appliance.rag import grounding

FALLBACK_NOTICE = "The generated answer was not supported by the sources, so here is what they say: "
PARTIAL_NOTICE = " (Part of the generated answer was left out: the sources do not support it.)"


@dataclass
class Outcome:
    """Filled in while the stream runs; read after it ends."""

    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    fallback: bool = False
    dropped: int = 0  # unsupported sentences withheld (grounded)


async def extractive(question: str, hits: list[ScoredChunk], embedder: Any) -> str:
    texts = [h.chunk.text for h in hits]

    def pick() -> list[grounding.Extract]:
        candidates = grounding.candidate_sentences(texts)
        if not candidates:
            return []
        vecs = embedder.embed_documents([s for _, s in candidates])
        return grounding.best_sentences(question, texts, embedder.embed_query(question), vecs)

    extracts = await asyncio.to_thread(pick)
    if not extracts:
        return hits[0].chunk.text.strip()[:400] + " [1]" if hits else ""
    return grounding.format_extract(extracts)


async def abstractive(
    pool: Any, model: str, messages: list[dict[str, str]], params: GenerationParams, outcome: Outcome
) -> AsyncIterator[str]:
    async for delta in pool.chat(messages, params, model=model):
        if delta.content:
            yield delta.content
        if delta.usage:
            outcome.usage = delta.usage


def _release(sentence: str, bags: list[set[str]], n_sources: int, min_support: float) -> str | None:
    """The sentence with a valid citation when the sources back it, else None."""
    check = grounding.sentence_support(sentence, bags)
    if check.weight == 0:
        return sentence  # no claim ("Sure.", a bare citation): harmless
    if check.support < min_support or check.source is None:
        return None
    cited = [i for i in grounding.cited_indices(sentence) if 1 <= i <= n_sources]
    clean = grounding.strip_citations(sentence).rstrip()
    if not clean:
        return None
    # Keep the model's citation when it names a source that backs the sentence as well.
    best = check.source
    for i in cited:
        if grounding.sentence_support(sentence, [bags[i - 1]]).support >= min_support:
            best = i
            break
    if clean[-1] in ".!?":
        return f"{clean[:-1]} [{best}]{clean[-1]}"
    return f"{clean} [{best}]"


async def grounded(
    pool: Any,
    model: str,
    messages: list[dict[str, str]],
    params: GenerationParams,
    question: str,
    hits: list[ScoredChunk],
    embedder: Any,
    min_support: float,
    outcome: Outcome,
) -> AsyncIterator[str]:
    bags = grounding.source_bags([h.chunk.text for h in hits])
    buffer = ""
    released = 0

    def complete(text: str) -> tuple[list[str], str]:
        parts = grounding._SPLIT.split(text)
        # The last piece may be a sentence still being written; the rest are finished.
        if len(parts) <= 1:
            return [], text
        return [p for p in parts[:-1] if p.strip()], parts[-1]

    async for piece in abstractive(pool, model, messages, params, outcome):
        buffer += piece
        done, buffer = complete(buffer)
        for sentence in done:
            kept = _release(sentence.strip(), bags, len(hits), min_support)
            if kept is None:
                outcome.dropped += 1
                continue
            yield ("" if released == 0 else " ") + kept
            released += 1
    if buffer.strip():
        kept = _release(buffer.strip(), bags, len(hits), min_support)
        if kept is None:
            outcome.dropped += 1
        else:
            yield ("" if released == 0 else " ") + kept
            released += 1
    if released == 0:
        outcome.fallback = True
        yield FALLBACK_NOTICE + await extractive(question, hits, embedder)
    elif outcome.dropped:
        yield PARTIAL_NOTICE
