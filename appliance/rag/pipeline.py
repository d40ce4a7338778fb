"""Retrieval-augmented answering: retrieve (hybrid, access-filtered) -> prompt -> stream -> cite -> audit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from typing import Any

from appliance.audit import AuditLog, audit_query
from appliance.domain import Citation, Principal, ScoredChunk
from appliance.embeddings.base import Embedder
from appliance.inference.base import GenerationParams
from appliance.inference.pool import InferencePool
from appliance.rag.prompts import NO_SOURCES_ANSWER, build_messages
from appliance.retrieval import Retriever, access_filter  # noqa: F401 - access_filter is re-exported
from appliance.vectorstore.base import SearchFilter, SearchMode, VectorStore


@dataclass
class AskResult:
    answer: str
    citations: list[dict[str, Any]]
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def citation_dicts(hits: list[ScoredChunk]) -> list[dict[str, Any]]:
    """Hits as citation objects, numbered from 1 in rank order (the numbering the prompt uses)."""
    return [asdict(Citation.from_hit(i, h)) for i, h in enumerate(hits, start=1)]


class RagService:
    def __init__(
        self,
        embedder: Embedder,
        store: VectorStore,
        pool: InferencePool,
        audit: AuditLog | None,
        top_k: int,
        default_collection: str,
        defaults: GenerationParams,
        retriever: Retriever | None = None,
    ) -> None:
        self.retriever = retriever or Retriever(embedder, store)
        self.embedder = embedder
        self.store = store
        self.pool = pool
        self.audit = audit
        self.top_k = top_k
        self.default_collection = default_collection
        self.defaults = defaults

    def search(
        self,
        query: str,
        principal: Principal,
        collection: str | None = None,
        k: int | None = None,
        filter: SearchFilter | None = None,
        mode: SearchMode = "hybrid",
    ) -> tuple[list[ScoredChunk], float]:
        """Retrieval only; ``filter`` narrows what the principal may read, never widens it."""
        return self.retriever.search(
            query, principal, collection or self.default_collection, k or self.top_k, filter, mode
        )

    async def ask_stream(
        self,
        question: str,
        principal: Principal,
        collection: str | None = None,
        k: int | None = None,
        params: GenerationParams | None = None,
        model: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events: ``citations`` (first), ``delta`` (many), ``done`` (last, with the full result)."""
        backend = self.pool.backend(model)
        await asyncio.to_thread(backend.start)  # loading the model is not time to first token
        started = time.perf_counter()
        collection = collection or self.default_collection
        hits, retrieval_ms = await asyncio.to_thread(self.search, question, principal, collection, k)
        params = params or self.defaults
        # The citations are exactly the sources the model is shown, numbered as in the prompt.
        hits = await asyncio.to_thread(
            self._fit, question, hits, backend.count_tokens, backend.context_tokens, params.max_tokens
        )
        citations = citation_dicts(hits)
        yield {"type": "citations", "citations": citations}
        parts: list[str] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        ttft_ms = 0.0
        status = "ok"
        try:
            if not hits:
                parts.append(NO_SOURCES_ANSWER)
                ttft_ms = (time.perf_counter() - started) * 1000
                yield {"type": "delta", "content": NO_SOURCES_ANSWER}
            else:
                messages = build_messages(question, hits)
                async for delta in self.pool.chat(messages, params, model=backend.name, user=principal.name):
                    if delta.content:
                        if not parts:
                            ttft_ms = (time.perf_counter() - started) * 1000
                        parts.append(delta.content)
                        yield {"type": "delta", "content": delta.content}
                    if delta.usage:
                        usage = delta.usage
        except BaseException:
            status = "error"
            raise
        finally:
            answer = "".join(parts).strip()
            total_ms = (time.perf_counter() - started) * 1000
            result = AskResult(
                answer=answer,
                citations=citations,
                model=backend.name,
                usage=usage,
                timings={
                    "retrieval_ms": round(retrieval_ms, 1),
                    "ttft_ms": round(ttft_ms, 1),
                    "total_ms": round(total_ms, 1),
                },
            )
            self._audit(principal, collection, question, hits, result, status)
        yield {"type": "done", "result": result}

    async def ask(self, question: str, principal: Principal, **kwargs: Any) -> AskResult:
        result: AskResult | None = None
        async for event in self.ask_stream(question, principal, **kwargs):
            if event["type"] == "done":
                result = event["result"]
        assert result is not None
        return result

    @staticmethod
    def _fit(
        question: str, hits: list[ScoredChunk], count: Any, context: int, max_tokens: int
    ) -> list[ScoredChunk]:
        """Drop the lowest-ranked sources until the prompt leaves room for the answer."""
        kept = list(hits)
        while kept:
            prompt = "\n".join(m["content"] for m in build_messages(question, kept))
            if count(prompt) + max_tokens + 64 <= context:  # 64: chat-template tokens
                break
            kept.pop()
        return kept

    def _audit(
        self,
        principal: Principal,
        collection: str,
        question: str,
        hits: list[ScoredChunk],
        result: AskResult,
        status: str,
    ) -> None:
        audit_query(
            self.audit,
            action="ask",
            principal=principal,
            collection=collection,
            question=question,
            hits=hits,
            status=status,
            latency_ms=result.timings.get("total_ms"),
            model=result.model,
            answer=result.answer,
            usage=result.usage,
        )
