"""Retrieval: who may read what, the client's narrowing filters, hybrid search, optional rerank.

Access rules become a filter inside the store query (never a post-filter, so top-k is filled with
readable chunks only); a client's filter is intersected with them and can only narrow.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from appliance.domain import Principal, ScoredChunk, validate_collection_name
from appliance.embeddings.base import Embedder, Reranker
from appliance.vectorstore.base import SearchFilter, SearchMode, VectorStore


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


@dataclass
class Retriever:
    embedder: Embedder
    store: VectorStore
    reranker: Reranker | None = None
    rerank_candidates: int = 20
    max_per_document: int = 0

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
        collection = validate_collection_name(collection)
        self.embedder.start()  # model loading is not retrieval time
        started = time.perf_counter()
        if collection not in self.store.collections():
            return [], 0.0
        flt = effective_filter(principal, filter)
        vec = (
            np.zeros(self.embedder.dim, dtype=np.float32)
            if mode == "bm25"
            else self.embedder.embed_query(query)
        )
        wanted = max(k, self.rerank_candidates) if self.reranker is not None else k
        hits = self.store.search(collection, vec, query, flt, wanted, mode=mode)
        if self.reranker is not None and hits:
            hits = self._rerank(query, hits, k)
        return hits, (time.perf_counter() - started) * 1000

    def _rerank(self, query: str, hits: list[ScoredChunk], k: int) -> list[ScoredChunk]:
        assert self.reranker is not None
        scores = self.reranker.scores(query, [h.chunk.text for h in hits])
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))
        kept: list[ScoredChunk] = []
        per_doc: dict[str, int] = {}
        for i in order:
            doc = hits[i].chunk.document_id
            if self.max_per_document and per_doc.get(doc, 0) >= self.max_per_document:
                continue
            per_doc[doc] = per_doc.get(doc, 0) + 1
            kept.append(ScoredChunk(hits[i].chunk, float(scores[i])))
            if len(kept) == k:
                break
        return kept
