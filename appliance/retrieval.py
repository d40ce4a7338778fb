"""Retrieval: who may read what, the client's narrowing filters, hybrid search, optional rerank,
and for answers the relevance floor and de-duplication.

Access rules become a filter inside the store query (never a post-filter, so top-k is filled with
readable chunks only); a client's filter is intersected with them and can only narrow.

One pass per question: the query is embedded once, and one store call returns the hits with
their stored vectors, which is all the relevance check needs. The query vector goes back to the
caller (the answer stage picks evidence sentences with it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from appliance.domain import Principal, ScoredChunk, validate_collection_name
from appliance.embeddings.base import Embedder, Reranker
from appliance.text import coverage
from appliance.vectorstore.base import SearchFilter, SearchMode, VectorStore
from appliance.vectorstore.hybrid import FusionConfig


def access_filter(principal: Principal) -> SearchFilter | None:
    """Admins read everything; everyone else reads chunks whose ACL names them, a group of theirs,
    or every signed-in user."""
    return None if principal.is_admin else SearchFilter(acl_any=tuple(principal.acl_tokens()))


def effective_filter(principal: Principal, client: SearchFilter | None) -> SearchFilter | None:
    """The principal's access filter narrowed by the client's; the client's ACL field is ignored."""
    base = access_filter(principal)
    if client is None:
        return base
    return (base or SearchFilter()).narrowed(client)


@dataclass(frozen=True)
class Relevance:
    """What an answer keeps of the search. ``candidates``: chunks fetched before the floors.
    ``min_relevance``: absolute floor (nothing reaches it: "I don't know"). ``relative_relevance``:
    floor as a fraction of the best hit's relevance (a distant runner-up only distracts a small
    model)."""

    candidates: int = 8
    min_relevance: float = 0.2
    relative_relevance: float = 0.5


@dataclass(frozen=True)
class Retrieval:
    """Relevant, distinct hits, best first; the query's vector; the time it took in ms."""

    hits: list[ScoredChunk]
    query_vector: np.ndarray
    ms: float


@dataclass
class Retriever:
    embedder: Embedder
    store: VectorStore
    reranker: Reranker | None = None
    rerank_candidates: int = 20
    fusion: FusionConfig = field(default_factory=FusionConfig)
    relevance: Relevance = field(default_factory=Relevance)
    # A collection's own BM25 weight (``appliance eval --tune --apply``), None for the default.
    collection_weight: Callable[[str], float | None] | None = None

    def fusion_for(self, collection: str) -> FusionConfig:
        """The fusion a search of ``collection`` uses: the configured one, with the collection's
        tuned BM25 weight when it has one."""
        weight = self.collection_weight(collection) if self.collection_weight is not None else None
        return self.fusion if weight is None else replace(self.fusion, bm25_weight=weight)

    def search(
        self,
        query: str,
        principal: Principal,
        collection: str,
        k: int,
        filter: SearchFilter | None = None,
        mode: SearchMode = "hybrid",
    ) -> tuple[list[ScoredChunk], float]:
        """Best ``k`` chunks the principal may read, and the retrieval time in ms."""
        self.embedder.start()  # model loading is not retrieval time
        started = time.perf_counter()
        hits, _ = self._search(query, principal, collection, k, filter, mode, with_vectors=False)
        return hits, (time.perf_counter() - started) * 1000

    def retrieve(self, query: str, principal: Principal, collection: str, k: int) -> Retrieval:
        """What an answer is built from: more candidates than needed, then the relevance floors and
        de-duplication, then the best ``k``."""
        self.embedder.start()
        started = time.perf_counter()
        n = max(k, self.relevance.candidates)
        hits, vector = self._search(query, principal, collection, n, None, "hybrid", with_vectors=True)
        kept = self._relevant(query, vector, hits)[:k]
        return Retrieval(kept, vector, (time.perf_counter() - started) * 1000)

    def _search(
        self,
        query: str,
        principal: Principal,
        collection: str,
        k: int,
        filter: SearchFilter | None,
        mode: SearchMode,
        with_vectors: bool,
    ) -> tuple[list[ScoredChunk], np.ndarray]:
        collection = validate_collection_name(collection)
        if collection not in self.store.collections():
            return [], np.zeros(self.embedder.dim, dtype=np.float32)
        vector = (
            np.zeros(self.embedder.dim, dtype=np.float32)
            if mode == "bm25"
            else np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        )
        wanted = max(k, self.rerank_candidates) if self.reranker is not None else k
        hits = self.store.search(
            collection,
            vector,
            query,
            effective_filter(principal, filter),
            wanted,
            mode=mode,
            fusion=self.fusion_for(collection),
            with_vectors=with_vectors,
        )
        if self.reranker is not None and hits:
            hits = self._rerank(query, hits, k)
        return hits, vector

    def _rerank(self, query: str, hits: list[ScoredChunk], k: int) -> list[ScoredChunk]:
        assert self.reranker is not None
        scores = self.reranker.scores(query, [h.chunk.text for h in hits])
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))
        cap = self.fusion.max_per_document
        kept: list[ScoredChunk] = []
        per_doc: dict[str, int] = {}
        for i in order:
            doc = hits[i].chunk.document_id
            if cap and per_doc.get(doc, 0) >= cap:
                continue
            per_doc[doc] = per_doc.get(doc, 0) + 1
            kept.append(replace(hits[i], score=float(scores[i])))
            if len(kept) == k:
                break
        return kept

    def relevance_scores(self, query: str, vector: np.ndarray, hits: list[ScoredChunk]) -> list[float]:
        """How well each hit matches the query: the better of the cosine similarity (the hit's
        stored vector against the query's) and the share of the query's words the chunk contains.
        RRF scores are ranks, not relevance: they cannot tell "the best of nothing" from a real
        match, so the floors use this instead. The word share keeps exact-term matches (codes,
        names, languages the embedder handles poorly) from being judged irrelevant."""
        if not hits:
            return []
        missing = [h.chunk.text for h in hits if h.vector is None]
        # Every hit of a search with vectors has one; a store that returned none is embedded here.
        fresh = iter(self.embedder.embed_documents(missing)) if missing else iter(())
        vectors = np.stack([h.vector if h.vector is not None else next(fresh) for h in hits])
        dense = vectors @ vector
        return [max(float(d), 0.5 * coverage(query, h.chunk.text)) for d, h in zip(dense, hits, strict=True)]

    def _relevant(self, query: str, vector: np.ndarray, hits: list[ScoredChunk]) -> list[ScoredChunk]:
        scores = self.relevance_scores(query, vector, hits)
        opts = self.relevance
        floor = max(opts.min_relevance, opts.relative_relevance * max(scores, default=0.0))
        seen: set[str] = set()
        kept: list[ScoredChunk] = []
        for hit, score in zip(hits, scores, strict=True):
            key = hashlib.sha256(" ".join(hit.chunk.text.split()).lower().encode()).hexdigest()
            if score < floor or key in seen or hit.chunk.id in seen:
                continue
            seen.update((key, hit.chunk.id))
            kept.append(hit)
        return kept
