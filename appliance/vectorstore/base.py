"""VectorStore contract: one collection per knowledge base, hybrid search inside the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from appliance.domain import Chunk, ScoredChunk

if TYPE_CHECKING:
    from appliance.vectorstore.hybrid import FusionConfig


@dataclass(frozen=True)
class SearchFilter:
    """Restrictions applied inside the vector query, never after it. All of them must hold.

    ``acl_any``: the chunk must carry at least one of these ACL tokens (None = no ACL restriction,
    which only admins get). ``document_ids``, ``uris``, ``sources``: restrict to these documents,
    document URIs or ingested sources (the root a connector walked). ``modified_after`` /
    ``modified_before``: bounds on the document's modification time, in epoch seconds.
    """

    acl_any: tuple[str, ...] | None = None
    document_ids: tuple[str, ...] = field(default=())
    uris: tuple[str, ...] = field(default=())
    sources: tuple[str, ...] = field(default=())
    modified_after: float | None = None
    modified_before: float | None = None

    def narrowed(self, other: SearchFilter | None) -> SearchFilter:
        """This filter AND ``other``'s restrictions, keeping this one's ACL: a client's filter can
        only narrow what the access rules allow, never widen it."""
        if other is None:
            return self
        return replace(
            self,
            document_ids=_intersect(self.document_ids, other.document_ids),
            uris=_intersect(self.uris, other.uris),
            sources=_intersect(self.sources, other.sources),
            modified_after=_bound(max, self.modified_after, other.modified_after),
            modified_before=_bound(min, self.modified_before, other.modified_before),
        )

    @property
    def empty_result(self) -> bool:
        """True when the restrictions exclude everything (an empty intersection)."""
        return any(v == (_NOTHING,) for v in (self.document_ids, self.uris, self.sources))

    def keyword_matches(self) -> list[tuple[str, list[str]]]:
        """(payload field, allowed values) pairs every chunk must match; adapters translate them."""
        out: list[tuple[str, list[str]]] = []
        for key, values in (
            ("acl", self.acl_any),
            ("document_id", self.document_ids),
            ("uri", self.uris),
            ("source", self.sources),
        ):
            # acl_any=() is "no token grants access": it must match nothing, not be left out.
            if values or (key == "acl" and values is not None):
                out.append((key, list(values or ("\x00",))))
        return out

    @property
    def has_modified_range(self) -> bool:
        return self.modified_after is not None or self.modified_before is not None


# Stands for "no value is allowed" after two non-empty lists had nothing in common.
_NOTHING = "\x00nothing"


def _intersect(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    if not a or not b:
        return a or b
    both = tuple(x for x in a if x in set(b))
    return both or (_NOTHING,)


def _bound(pick: Callable[[float, float], float], a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else pick(a, b)


SearchMode = Literal["hybrid", "dense", "bm25"]


class VectorStore(Protocol):
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection if missing; fail if it exists with another dimension."""
        ...

    def upsert(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert or overwrite chunks (by id) with their dense vectors; the store indexes their
        text for BM25 itself."""
        ...

    def encode_ahead(self, collection: str, texts: Sequence[str]) -> None:
        """Prepare the BM25 vectors of chunks about to be upserted, on the caller's thread (a
        look-ahead thread of ingestion, while the embedder works); ``upsert`` uses them."""
        ...

    def delete(self, collection: str, document_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents."""
        ...

    def delete_chunks(self, collection: str, chunk_ids: Sequence[str]) -> None: ...

    def flush(self, collection: str) -> None:
        """Commit point of a batch: everything upserted before is durable after this returns."""
        ...

    def optimize(self, collection: str) -> None:
        """Build search indexes (HNSW) over what was written and vacuum deleted points; called
        after an ingest run that changed something. A no-op where the store does it by itself."""
        ...

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
        """Dense + BM25 candidates fused with weighted RRF, best first, at most
        ``fusion.max_per_document`` chunks per document. ``mode`` ``dense`` or ``bm25`` uses one
        side only (ablation). ``fusion``: how candidates are gathered and fused (None: the store's
        default). ``with_vectors``: each hit carries its stored dense vector in
        ``ScoredChunk.vector``, from the same store request."""
        ...

    def get(self, collection: str, chunk_ids: Sequence[str]) -> list[Chunk]: ...

    def get_with_vectors(self, collection: str, chunk_ids: Sequence[str]) -> list[tuple[Chunk, np.ndarray]]:
        """The chunks that exist among ``chunk_ids`` with their stored dense vectors (ingestion
        reuses the vectors of unchanged content)."""
        ...

    def point_index(self, collection: str, page: int = 1000) -> list[tuple[str, str, int]]:
        """(point id, document id, position) of every point: the ledger-vs-index check."""
        ...

    def count(self, collection: str) -> int: ...

    def collections(self) -> list[str]: ...

    def drop_collection(self, name: str) -> None:
        """Remove the collection and everything in it."""
        ...

    def close(self) -> None: ...
