"""The three ways to turn the packed sources into an answer, each an async stream of text pieces.

- ``abstractive``: the model's tokens as they come.
- ``extractive``: the sentences of the sources that best answer the question, cited; no model.
- ``grounded``: the model's answer released sentence by sentence, each only when a source backs it
  and it agrees with the best evidence sentences (its citation repaired to the source that backs
  it); sentences that fail are left out; when none passes, the extractive answer, with a notice. Streaming is per sentence instead of per token: that is the price of
  never showing a claim that is then taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.domain import ScoredChunk
from appliance.embeddings.base import Embedder
from appliance.inference.base import GenerationParams
from appliance.rag import grounding

FALLBACK_NOTICE = "The generated answer was not supported by the sources, so here is what they say: "


@dataclass
class Outcome:
    """Filled in while the stream runs; read after it ends."""

    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    fallback: bool = False
    dropped: int = 0  # unsupported sentences withheld (grounded)


async def evidence(
    question: str, question_vector: np.ndarray, hits: list[ScoredChunk], embedder: Embedder
) -> list[grounding.Extract]:
    """The source sentences that best answer the question (embedding + word overlap).
    ``question_vector``: the question as retrieval embedded it (not embedded again)."""
    texts = [h.chunk.text for h in hits]

    def pick() -> list[grounding.Extract]:
        candidates = grounding.candidate_sentences(texts)
        if not candidates:
            return []
        vecs = embedder.embed_documents([s for _, s in candidates])
        return grounding.best_sentences(question, texts, question_vector, vecs)

    return await asyncio.to_thread(pick)


def format_evidence(extracts: list[grounding.Extract], hits: list[ScoredChunk]) -> str:
    if not extracts:
        return hits[0].chunk.text.strip()[:400] + " [1]" if hits else ""
    return grounding.format_extract(extracts)


async def extractive(
    question: str, question_vector: np.ndarray, hits: list[ScoredChunk], embedder: Embedder
) -> str:
    return format_evidence(await evidence(question, question_vector, hits, embedder), hits)


async def abstractive(
    pool: Any,
    model: str,
    messages: list[dict[str, str]],
    params: GenerationParams,
    outcome: Outcome,
    user: str | None = None,
) -> AsyncGenerator[str, None]:
    # aclosing, here and by our callers: when the client goes, the generation must close now (the
    # worker stops, the slot is free), not whenever the garbage collector finalises it.
    async with contextlib.aclosing(pool.chat(messages, params, model=model, user=user)) as deltas:
        async for delta in deltas:
            if delta.content:
                yield delta.content
            if delta.usage:
                outcome.usage = delta.usage


_ECHO = re.compile(r"<<<[^>\n]*>{0,3}|^\s*(?:question|sources?|answer)\s*:\s*", re.IGNORECASE | re.MULTILINE)


@dataclass
class Gate:
    """What a generated sentence must pass to be shown: backed by a source, and saying something
    beyond the question that agrees with the best evidence sentences."""

    bags: list[set[str]]
    question: set[str]
    evidence: set[str]
    min_support: float

    def release(self, sentence: str) -> str | None:
        """The sentence with a valid citation when it passes, else None."""
        sentence = _ECHO.sub("", sentence).strip()
        tokens = grounding.bag(sentence)
        novel = tokens - self.question
        if not novel:
            return None  # no claim, or the question echoed back
        check = grounding.sentence_support(sentence, self.bags)
        if check.support < self.min_support or check.source is None:
            return None
        if self.evidence and not novel & self.evidence:
            return None  # backed by some source, but not an answer to this question
        n_sources = len(self.bags)
        cited = [i for i in grounding.cited_indices(sentence) if 1 <= i <= n_sources]
        clean = grounding.strip_citations(sentence).rstrip()
        # Keep the model's citation when it names a source that backs the sentence as well.
        best = check.source
        for i in cited:
            if grounding.sentence_support(sentence, [self.bags[i - 1]]).support >= self.min_support:
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
    question_vector: np.ndarray,
    hits: list[ScoredChunk],
    embedder: Embedder,
    min_support: float,
    outcome: Outcome,
    user: str | None = None,
) -> AsyncGenerator[str, None]:
    extracts = await evidence(question, question_vector, hits, embedder)
    q_bag = grounding.bag(question)
    gate = Gate(
        grounding.source_bags([h.chunk.text for h in hits]),
        q_bag,
        set().union(*(grounding.bag(e.sentence) for e in extracts)) - q_bag if extracts else set(),
        min_support,
    )
    buffer = ""
    released = 0

    def complete(text: str) -> tuple[list[str], str]:
        parts = grounding.SPLIT.split(text)
        # The last piece may be a sentence still being written; the rest are finished.
        if len(parts) <= 1:
            return [], text
        return [p for p in parts[:-1] if p.strip()], parts[-1]

    async with contextlib.aclosing(abstractive(pool, model, messages, params, outcome, user)) as pieces:
        async for piece in pieces:
            buffer += piece
            done, buffer = complete(buffer)
            for sentence in done:
                kept = gate.release(sentence.strip())
                if kept is None:
                    outcome.dropped += 1
                    continue
                yield ("" if released == 0 else " ") + kept
                released += 1
    if buffer.strip():
        kept = gate.release(buffer.strip())
        if kept is None:
            outcome.dropped += 1
        else:
            yield ("" if released == 0 else " ") + kept
            released += 1
    if released == 0:
        outcome.fallback = True
        yield FALLBACK_NOTICE + format_evidence(extracts, hits)
