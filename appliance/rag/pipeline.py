"""Retrieval-augmented answering: condense -> retrieve (hybrid, access-filtered) -> keep what is
relevant -> pack to the window -> answer (abstractive / extractive / grounded, see rag/modes.py)
-> cite -> record -> audit. Everything streams: ``citations`` first, then ``delta`` events (the
extractive answer one per sentence), then ``done``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from appliance.audit import QueryRecorder, audit_query
from appliance.domain import Principal, ScoredChunk
from appliance.embeddings.base import Embedder
from appliance.inference.base import GenerationParams
from appliance.inference.pool import InferencePool, Lease
from appliance.metering import Metering, Reservation
from appliance.rag import answering, grounding
from appliance.rag.citations import citation_dicts, mark_cited
from appliance.rag.condense import condense_heuristic, condense_llm
from appliance.rag.conversations import ConversationStore, new_id
from appliance.rag.modes import AnswerMode, ModeSetting, choose
from appliance.rag.prompts import NO_SOURCES_ANSWER, build_messages, format_source
from appliance.rag.render import safe_markdown, safe_stream
from appliance.retrieval import Retriever, access_filter
from appliance.security.acl import check_collection_scope

__all__ = ["AskResult", "RagOptions", "RagService", "access_filter", "citation_dicts"]

CondenseMode = Literal["heuristic", "llm", "off"]


@dataclass(frozen=True)
class RagOptions:
    answer_mode: ModeSetting = "extractive"
    # For ``auto``: the mode each served model's size calls for (modes.auto_mode), by model name.
    auto_modes: Mapping[str, AnswerMode] = field(default_factory=dict)
    min_support: float = 0.6
    # A small model's generated answer (one auto_modes quotes for) is shown only with this support.
    min_answer_support: float = 0.5
    condense: CondenseMode = "heuristic"
    history_turns: int = 3
    source_tokens: int = 48


@dataclass
class AskResult:
    answer: str
    citations: list[dict[str, Any]]
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    id: str = ""
    conversation_id: str | None = None
    mode: str = "extractive"
    support: float | None = None  # share of the answer the sources back; None: no sources
    fallback: bool = False  # the generated answer was replaced by quotes from the sources
    query: str = ""  # what was searched (the condensed question)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RagService:
    """Answers (and searches) over one retriever. ``default_collection`` is applied here, once per
    question, when the caller names none."""

    def __init__(
        self,
        retriever: Retriever,
        embedder: Embedder,
        pool: InferencePool,
        audit: QueryRecorder | None,
        top_k: int,
        default_collection: str,
        defaults: GenerationParams,
        options: RagOptions | None = None,
        conversations: ConversationStore | None = None,
        metering: Metering | None = None,
    ) -> None:
        self.retriever = retriever
        self.embedder = embedder
        self.pool = pool
        self.audit = audit
        self.top_k = top_k
        self.default_collection = default_collection
        self.defaults = defaults
        self.options = options or RagOptions()
        self.conversations = conversations
        self.metering = metering  # holds token quotas for a generation (Metering.reserve)

    @staticmethod
    def pack(
        question: str,
        hits: list[ScoredChunk],
        history: list[dict[str, str]],
        count: Any,
        context: int,
        max_tokens: int,
    ) -> list[ScoredChunk]:
        """The best-ranked sources that fit the window with room left for the answer."""
        fixed = count("\n".join(m["content"] for m in build_messages(question, [], history)))
        budget = context - max_tokens - 64 - fixed  # 64: chat-template tokens
        kept = []
        for i, hit in enumerate(hits, start=1):
            cost = count(format_source(i, hit)) + 2
            if cost > budget:
                break
            budget -= cost
            kept.append(hit)
        return kept

    async def condense(
        self, question: str, history: list[dict[str, str]], model: str | None, user: str | None = None
    ) -> tuple[str, dict[str, int]]:
        if not history:
            return question, {}
        match self.options.condense:
            case "off":
                return question, {}
            case "heuristic":
                return condense_heuristic(history, question), {}
            case "llm":
                return await condense_llm(self.pool, model, history, question, user)

    async def ask_stream(
        self,
        question: str,
        principal: Principal,
        collection: str | None = None,
        k: int | None = None,
        params: GenerationParams | None = None,
        model: str | None = None,
        history: list[dict[str, str]] | None = None,
        conversation_id: str | None = None,
        mode: ModeSetting | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events: ``citations`` (first, with the answer ``id``), ``delta`` (many), ``done`` (last,
        with the full result). ``history``: earlier turns as chat messages (the conversation's, when
        ``conversation_id`` names one and no history is given). ``mode``: None for the setting's."""
        collection = collection or self.default_collection
        # Here, on the collection actually searched, whatever route or field named it (the API's
        # dependency checks what it can see of a request; this holds for every caller).
        check_collection_scope(principal, [collection], self.default_collection)
        backend = self.pool.backend(model)
        mode = self.mode_for(backend.name, mode)
        if conversation_id and self.conversations is not None:
            stored = await asyncio.to_thread(
                self.conversations.history,
                conversation_id,
                principal.name,
                self.options.history_turns,
                principal,  # answers citing what the caller may no longer read stay out of the prompt
            )
            history = history if history is not None else stored
        history = [t for t in (history or []) if t.get("role") in ("user", "assistant")][
            -2 * self.options.history_turns :
        ]
        if mode != "extractive":
            await asyncio.to_thread(backend.start)  # loading the model is not time to first token
        started = time.perf_counter()
        answer_id = new_id()
        query, condense_usage = await self.condense(question, history, backend.name, principal.name)
        t0 = time.perf_counter()
        found = await asyncio.to_thread(
            self.retriever.retrieve, query, principal, collection, k or self.top_k
        )
        retrieval_ms = (time.perf_counter() - t0) * 1000
        hits = found.hits
        params = params or self.defaults
        prompt_history = history if query == question else []  # a condensed query carries the context
        shown = hits  # what the model reads of each source: its sentences on the question
        if mode != "extractive":
            shown = await asyncio.to_thread(
                focus_sources, query, hits, self.options.source_tokens, backend.count_tokens
            )
            # The citations are exactly the sources the model is shown, numbered as in the prompt.
            shown = await asyncio.to_thread(
                self.pack,
                query,
                shown,
                prompt_history,
                backend.count_tokens,
                backend.context_tokens,
                params.max_tokens,
            )
            hits = hits[: len(shown)]
        citations = citation_dicts(hits, query)
        parts: list[str] = []
        outcome = answering.Outcome()
        ttft_ms = 0.0
        status = "ok"
        lease: Lease | None = None
        held: Reservation | None = None
        messages: list[dict[str, str]] = []
        try:
            if hits and mode != "extractive":
                messages = build_messages(query, shown, prompt_history)
                if self.metering is not None:
                    # Before the slot: the prompt and the most the answer may take are held against
                    # the caller's daily quotas, so concurrent answers cannot together overshoot.
                    need = params.max_tokens + sum(backend.count_tokens(m["content"]) for m in messages)
                    held = await asyncio.to_thread(self.metering.reserve, principal, need)
                # The model's slot (or a place in its queue) is taken before the first event: the
                # routers send their 200 only after it, so a full queue is a 429 + Retry-After,
                # not a 200 with an error event; and no other request can take the slot between
                # admission and generation. Not before retrieval: that would idle the slot.
                lease = await self.pool.reserve(backend.name, principal.name)
            yield {"type": "citations", "citations": citations, "id": answer_id}
            if not hits:
                stream: AsyncGenerator[str, None] = _once(NO_SOURCES_ANSWER)
            elif mode == "extractive":
                stream = answering.extractive_stream(query, found.query_vector, hits, self.embedder)
            else:
                assert lease is not None
                # The lease stands in for the pool: the generation runs on the reserved slot.
                if mode == "abstractive":
                    stream = answering.abstractive(
                        lease, backend.name, messages, params, outcome, principal.name
                    )
                else:
                    stream = answering.grounded(
                        lease,
                        backend.name,
                        messages,
                        params,
                        query,
                        found.query_vector,
                        hits,
                        self.embedder,
                        self.options.min_support,
                        outcome,
                        principal.name,
                    )
            check = None
            if hits and mode != "extractive" and self._checks(backend.name):
                check = answering.AnswerCheck(
                    query, found.query_vector, hits, self.embedder, self.options.min_answer_support, outcome
                )
                if mode == "grounded":
                    stream = check.held(stream)
            # Whatever the mode, a reader gets no image, link or prompt fence from the answer; the
            # extractive pieces are whole sentences and come cleaned.
            cleaned = stream if mode == "extractive" and hits else safe_stream(stream)
            async with contextlib.aclosing(cleaned) as pieces:  # see answering.abstractive
                async for piece in pieces:
                    if not parts:
                        ttft_ms = (time.perf_counter() - started) * 1000
                    parts.append(piece)
                    yield {"type": "delta", "content": piece}
            if check is not None and mode == "abstractive":
                # Its tokens went out as generated (the mode's point, and what a Stop button needs);
                # the answer itself, as recorded and as every non-streamed response carries it, is
                # checked like a grounded one's.
                instead = await check.replacement("".join(parts))
                parts = parts if instead is None else [instead]
        except BaseException:
            status = "error"
            raise
        finally:
            if lease is not None:
                lease.release()  # when no generation started on it; a started one frees it itself
            answer = safe_markdown("".join(parts)).strip()
            usage = dict(outcome.usage)
            for key, value in condense_usage.items():
                usage[key] = usage.get(key, 0) + value
            score = None
            if hits:
                body = answering.without_fallback_notice(answer)
                score = round(grounding.support(body, [h.chunk.text for h in hits]).score, 4)
            result = AskResult(
                answer=answer,
                citations=mark_cited(citations, answer),
                model=backend.name,
                usage=usage,
                timings={
                    "retrieval_ms": round(retrieval_ms, 1),
                    "ttft_ms": round(ttft_ms, 1),
                    "total_ms": round((time.perf_counter() - started) * 1000, 1),
                },
                id=answer_id,
                conversation_id=conversation_id,
                mode=mode,
                support=score,
                fallback=outcome.fallback,
                query=query,
            )
            try:
                if status == "ok":
                    self._record(principal, collection, question, result)
                self._audit(principal, collection, question, hits, result, status)  # meters it
            finally:
                if self.metering is not None:
                    self.metering.release(held)  # the real usage is counted now
        yield {"type": "done", "result": result}

    def _checks(self, model: str) -> bool:
        """Whether ``model``'s generated answers are judged whole before they are shown: a model
        ``auto`` would have quote instead (under 1B parameters), when the check is on."""
        return self.options.min_answer_support > 0 and self.options.auto_modes.get(model) == "extractive"

    def mode_for(self, model: str, requested: ModeSetting | None = None) -> AnswerMode:
        """The answer mode a question to ``model`` gets (``requested`` wins over the setting)."""
        return choose(requested, self.options.answer_mode, model, self.options.auto_modes)

    async def ask(self, question: str, principal: Principal, **kwargs: Any) -> AskResult:
        result: AskResult | None = None
        async for event in self.ask_stream(question, principal, **kwargs):
            if event["type"] == "done":
                result = event["result"]
        assert result is not None
        return result

    def _record(self, principal: Principal, collection: str, question: str, result: AskResult) -> None:
        if self.conversations is None:
            return
        self.conversations.record(
            principal.name,
            {
                "id": result.id,
                "conversation_id": result.conversation_id,
                "collection": collection,
                "question": question,
                "query": result.query,
                "answer": result.answer,
                "citations": result.citations,
                "support": result.support,
                "mode": result.mode,
                "fallback": result.fallback,
                "model": result.model,
            },
        )

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
            extra={
                "answer_id": result.id,
                "conversation_id": result.conversation_id,
                "mode": result.mode,
                "support": result.support,
                "fallback": result.fallback,
            },
        )


def focus_sources(question: str, hits: list[ScoredChunk], budget: int, count: Any) -> list[ScoredChunk]:
    """Each source cut to its ``budget`` most question-like tokens (whole sentences). Prefill is
    most of the time to first token on a CPU: five whole 200-token chunks cost ~3.4 s here, five
    focused ones a fraction of it. Citations keep the whole chunk."""
    if budget <= 0:
        return hits
    return [
        replace(h, chunk=replace(h.chunk, text=grounding.focus(h.chunk.text, question, budget, count)))
        for h in hits
    ]


async def _once(text: str) -> AsyncGenerator[str, None]:
    yield text
