"""Embedder contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    """Turns text into unit-length dense vectors.

    ``dim``: vector size. ``max_tokens``: longest input, in the model's own tokens, that is embedded
    without truncation; chunking stays under it using ``count_tokens``.
    """

    name: str
    dim: int
    max_tokens: int

    def start(self) -> None: ...

    def embed_documents(self, texts: Sequence[str], threads: int | None = None) -> np.ndarray:
        """Shape (len(texts), dim), float32, L2-normalised. ``threads``: CPU threads for this call
        (ingestion passes fewer while parser processes hold the other cores); None: the default."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Shape (dim,), float32, L2-normalised."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


class Reranker(Protocol):
    """Re-scores (query, passage) pairs jointly; slower than the embedder, so it sees only the
    fused candidates. ``scores`` returns one relevance score per passage, higher is better."""

    def scores(self, query: str, passages: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...
