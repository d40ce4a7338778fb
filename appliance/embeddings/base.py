"""Embedder contract, and the one thread torch computes on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import numpy as np

T = TypeVar("T")

# torch computes with an OpenMP team per calling thread. Called from several threads (the API's
# worker threads, ingestion's), the teams outnumber the cores, and libgomp then sleeps between
# parallel regions instead of spinning: a query took 16-20 ms from four threads, 12-15 from one.
# So every torch call in this process (embedder, reranker) runs on this one thread.
_TORCH_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch")
_on_torch = threading.local()


def on_torch_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the torch thread (at once when already on it), its result or its error."""
    if getattr(_on_torch, "yes", False):
        return fn(*args)
    return _TORCH_THREAD.submit(_mark, fn, *args).result()


def _mark(fn: Callable[..., T], *args: Any) -> T:
    _on_torch.yes = True
    return fn(*args)


class Embedder(Protocol):
    """Turns text into unit-length dense vectors.

    ``dim``: vector size. ``max_tokens``: longest input, in the model's own tokens, that is embedded
    without truncation; chunking stays under it using ``count_tokens``. ``threads``: the CPU
    threads a call uses by default (ingestion passes fewer while parsers are busy).
    """

    name: str
    dim: int
    max_tokens: int
    threads: int

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
