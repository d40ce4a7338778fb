"""VectorStore contract: one collection per knowledge base, hybrid search inside the store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from appliance.domain import Chunk, ScoredChunk


@dataclass(frozen=True)
class SearchFilter:
    """Restrictions applied inside the vector query, never after it.

    ``acl_any``: the chunk must carry at least one of these ACL tokens (None = no ACL restriction,
    which only admins get). ``document_ids``: restrict to these documents.
    """

    acl_any: tuple[str, ...] | None = None
    document_ids: tuple[str, ...] = field(default=())


class VectorStore(Protocol):
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection if missing; fail if it exists with another dimension."""
        ...

    def upsert(self, collection: str, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert or overwrite chunks (by id) with their dense vectors; the store indexes their
        text for BM25 itself."""
        ...

    def delete(self, collection: str, document_ids: Sequence[str]) -> None:
        """Remove every chunk of these documents."""
        ...

    def delete_chunks(self, collection: str, chunk_ids: Sequence[str]) -> None: ...

    def flush(self, collection: str) -> None:
        """Commit point of a batch: everything upserted before is durable after this returns."""
        ...

    def search(
        self,
        collection: str,
        query_vec: np.ndarray,
        query_text: str,
        filter: SearchFilter | None,
        k: int,
    ) -> list[ScoredChunk]:
        """Dense + BM25 candidates fused with RRF, best first."""
        ...

    def get(self, collection: str, chunk_ids: Sequence[str]) -> list[Chunk]: ...

    def count(self, collection: str) -> int: ...

    def collections(self) -> list[str]: ...

    def drop_collection(self, name: str) -> None:
        """Remove the collection and everything in it."""
        ...

    def close(self) -> None: ...
