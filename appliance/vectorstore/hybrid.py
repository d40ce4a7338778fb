"""The search half every adapter shares: encode BM25, ask the store for both candidate lists in one
batch, fuse them and cap results per document. Adapters only translate filters and run queries."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from appliance.domain import Chunk, ScoredChunk
from appliance.vectorstore import bm25
from appliance.vectorstore.base import SearchFilter, SearchMode
from appliance.vectorstore.fusion import Candidate, cap_per_document, dbsf, minmax, weighted_rrf

DENSE = "dense"
# A collection's BM25 sparse vector is named after the tokenizer that filled it, so that a new
# tokenizer never mixes its terms with an old one's: collections made before jieba keep "bm25"
# (tokenizer 1) and keep working as they were; new collections get "bm25-v2". Re-creating a
# collection (drop, ingest again) moves it to the current tokenizer.
SPARSE = "bm25"
SPARSE_NAMES = {1: SPARSE, 2: "bm25-v2"}
SPARSE_VERSIONS = {name: version for version, name in SPARSE_NAMES.items()}
CURRENT_SPARSE = SPARSE_NAMES[bm25.TOKENIZER_VERSION]
# Payload fields with an index: everything a SearchFilter or a delete can name.
KEYWORD_FIELDS = ("document_id", "collection", "uri", "source", "acl")
FLOAT_FIELDS = ("modified",)
# The fields whose values get HNSW links of their own (Qdrant's payload-based graph), so a search
# filtered on them stays fast and finds its neighbours however few points pass: the access rule,
# which every search carries. Every other index only filters: "collection" (and mostly "source")
# holds one value on every point of a shard, so its graph was a second copy of the whole one;
# document and URI blocks are too small to get a graph; "modified" ranges would get one per block.
GRAPH_FIELDS = frozenset({"acl"})
FusionMethod = Literal["minmax", "dbsf", "rrf"]
# BM25 vectors encoded ahead of their upsert (``encode_ahead``) kept at most; a run that prepared
# documents it never wrote leaves some behind, dropped when the next ones would pass this.
SPARSE_AHEAD_MAX = 20_000


@dataclass(frozen=True)
class FusionConfig:
    """How candidates are gathered and fused. ``prefetch``: candidates per side. ``method``:
    ``minmax`` (min-max normalised scores, added), ``dbsf`` (distribution-based score fusion) or
    ``rrf`` (reciprocal-rank fusion); see fusion.py. ``rrf_k``: RRF constant. ``dense_weight`` /
    ``bm25_weight``: weights of the two sides in any method. ``max_per_document``: cap on chunks
    from one document in a result (0: none)."""

    prefetch: int = 30
    rrf_k: int = 60
    dense_weight: float = 1.0
    bm25_weight: float = 1.25
    max_per_document: int = 0
    method: FusionMethod = "minmax"

    def fuse(self, lists: Sequence[Sequence[Candidate]], weights: Sequence[float]) -> list[Candidate]:
        match self.method:
            case "rrf":
                return weighted_rrf(lists, weights, self.rrf_k)
            case "dbsf":
                return dbsf(lists, weights)
            case _:
                return minmax(lists, weights)


@dataclass(frozen=True)
class SideQuery:
    """One candidate list to fetch: a dense vector or a sparse BM25 vector, under one filter."""

    using: str
    dense: list[float] | None
    sparse: bm25.SparseVector | None
    limit: int


def dense_vector(stored: object) -> np.ndarray | None:
    """The dense vector of a point as a client returns it (named vectors: a dict), or None."""
    vector = stored.get(DENSE) if isinstance(stored, dict) else stored
    return None if vector is None else np.asarray(vector, dtype=np.float32)


@dataclass
class SideResults:
    """What one batch of side queries returned: each side's candidates, best first, and (when asked
    for) every candidate's vectors by id, as the client returned them (only the hits that survive
    fusion are converted, by ``dense_vector``)."""

    candidates: list[list[Candidate]]
    vectors: dict[str, object] = field(default_factory=dict)


def qdrant_filter(flt: SearchFilter | None, models: Any, range_type: Any) -> Any:
    """``flt`` as a Qdrant ``Filter`` built from ``models`` (``qdrant_client.models`` or the
    ``qdrant_edge`` module: both spell conditions alike, only the range type's name differs)."""
    if flt is None:
        return None
    must: list[Any] = [
        models.FieldCondition(key=key, match=models.MatchAny(any=values))
        for key, values in flt.keyword_matches()
    ]
    if flt.has_modified_range:
        must.append(
            models.FieldCondition(
                key="modified", range=range_type(gte=flt.modified_after, lte=flt.modified_before)
            )
        )
    return models.Filter(must=must) if must else None


class HybridSearchMixin:
    fusion: FusionConfig
    _sparse: dict[str, str]  # collection -> its BM25 vector name, once known
    # (BM25 vector name, chunk text) -> its sparse vector, encoded ahead by ``encode_ahead``.
    _ahead: dict[tuple[str, str], bm25.SparseVector]
    _ahead_lock: threading.Lock

    def encode_ahead(self, collection: str, texts: Sequence[str]) -> None:
        """Encode the BM25 vectors of chunks about to be upserted, on the caller's thread.
        Ingestion calls it from its look-ahead threads, so BM25 (jieba's segmenter for Chinese,
        1 ms a chunk, and its dictionary's first load) runs while the embedder works instead of
        on the writer's thread between two embedding calls; ``upsert`` takes what it finds."""
        # Without the store lock where the name is known: an Edge index build holds it for minutes.
        name = self._sparse.get(collection) or self._sparse_name(collection)
        encoded = {(name, t): bm25.encode_document(t, SPARSE_VERSIONS[name]) for t in texts}
        with self._ahead_lock:
            if len(self._ahead) + len(encoded) > SPARSE_AHEAD_MAX:
                self._ahead.clear()
            self._ahead.update(encoded)

    def _encoded(self, name: str, text: str) -> bm25.SparseVector:
        """A chunk's BM25 vector for its upsert: the one encoded ahead, or encoded now."""
        with self._ahead_lock:
            found = self._ahead.pop((name, text), None)
        return found or bm25.encode_document(text, SPARSE_VERSIONS[name])

    def _run_queries(
        self,
        collection: str,
        queries: Sequence[SideQuery],
        filter: SearchFilter | None,
        with_vectors: bool = False,
    ) -> SideResults:
        """Each query's candidates, best first, filtered inside the store, in one request."""
        raise NotImplementedError

    def _sparse_name(self, collection: str) -> str:
        """The name of the collection's BM25 sparse vector, one of ``SPARSE_NAMES``'s values."""
        raise NotImplementedError

    def search(
        self,
        collection: str,
        query_vec: np.ndarray,
        query_text: str,
        filter: SearchFilter | None,
        k: int,
        mode: SearchMode = "hybrid",
        *,
        fusion: FusionConfig | None = None,
        with_vectors: bool = False,
    ) -> list[ScoredChunk]:
        if filter is not None and filter.empty_result:
            return []
        cfg = fusion or self.fusion
        # The per-document cap throws candidates away, so fetch more of them.
        limit = max(cfg.prefetch, k * (3 if cfg.max_per_document else 1))
        queries: list[SideQuery] = []
        weights: list[float] = []
        if mode in ("hybrid", "dense"):
            queries.append(SideQuery(DENSE, query_vec.astype(np.float32).tolist(), None, limit))
            weights.append(cfg.dense_weight)
        if mode in ("hybrid", "bm25"):
            name = self._sparse_name(collection)
            sparse = bm25.encode_query(query_text, SPARSE_VERSIONS[name])
            if sparse.indices:
                queries.append(SideQuery(name, None, sparse, limit))
                weights.append(cfg.bm25_weight)
        if not queries:
            return []
        # Equal scores may come back in any order (segments differ between stores); ranking them
        # by id makes RRF ranks, and so results, the same on every adapter.
        found = self._run_queries(collection, queries, filter, with_vectors)
        lists = [sorted(side, key=lambda c: (-round(c.score, 4), c.id)) for side in found.candidates]
        # One side alone keeps its own scores (cosine or BM25): more telling than a rank score.
        fused = lists[0] if len(lists) == 1 else cfg.fuse(lists, weights)
        top = cap_per_document(fused, k, cfg.max_per_document)
        scores = [c.score for c in top]
        if filter is not None and filter.acl_any is not None and any(q.sparse for q in queries):
            scores = rank_scores(len(top), cfg.rrf_k)
        return [
            ScoredChunk(Chunk.from_payload(c.id, c.payload), score, dense_vector(found.vectors.get(c.id)))
            for c, score in zip(top, scores, strict=True)
        ]


def rank_scores(n: int, rrf_k: int) -> list[float]:
    """Scores that say only the order: what a caller under an ACL filter gets once BM25 took part.

    The store's ``idf`` modifier weighs terms by their frequency over the WHOLE collection, readable
    or not, and no adapter can compute it over a filtered subset; so raw BM25 scores (and scores
    fused from them) would let a caller count the unreadable chunks that contain a word, by
    watching a readable chunk's score move. The order of the caller's own results shows nothing
    it cannot read, so that is all these scores carry. Admins read everything and keep the raw ones."""
    return [1.0 / (rrf_k + rank) for rank in range(1, n + 1)]
