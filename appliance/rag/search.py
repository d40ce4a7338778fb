"""Search as a user makes it (REST, CLI): retrieval only, with the default collection applied once
and the search recorded. Apart from the RAG service, so a search needs no chat model or pool."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.audit import QueryRecorder, audit_query
from appliance.domain import Principal, ScoredChunk
from appliance.retrieval import Retriever
from appliance.security.acl import check_collection_scope
from appliance.vectorstore.base import SearchFilter, SearchMode


@dataclass
class SearchService:
    retriever: Retriever
    queries: QueryRecorder | None
    default_collection: str
    top_k: int

    def search(
        self,
        query: str,
        principal: Principal,
        collection: str | None = None,
        k: int | None = None,
        filter: SearchFilter | None = None,
        mode: SearchMode = "hybrid",
    ) -> tuple[list[ScoredChunk], float]:
        """Retrieval only, not audited; ``filter`` narrows what the principal may read, never
        widens it. A key scoped to collections is checked here, on the collection searched."""
        collection = collection or self.default_collection
        check_collection_scope(principal, [collection], self.default_collection)
        return self.retriever.search(query, principal, collection, k or self.top_k, filter, mode)

    def search_and_audit(
        self,
        query: str,
        principal: Principal,
        collection: str | None = None,
        k: int | None = None,
        filter: SearchFilter | None = None,
        mode: SearchMode = "hybrid",
    ) -> tuple[list[ScoredChunk], float]:
        """A search as a user makes it: the hits and the retrieval time in ms, recorded in the
        audit log (and metered) as a ``search``."""
        collection = collection or self.default_collection
        hits, ms = self.search(query, principal, collection, k, filter, mode)
        audit_query(
            self.queries,
            action="search",
            principal=principal,
            collection=collection,
            question=query,
            hits=hits,
            status="ok",
            latency_ms=round(ms, 1),
        )
        return hits, ms
