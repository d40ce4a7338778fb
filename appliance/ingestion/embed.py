"""The embedding stage: the chunks of several prepared documents in one call (fewer, fuller
batches), identical documents embedded once, and the parser processes left their cores."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from appliance.embeddings.base import Embedder
from appliance.ingestion.prepare import Prepared

# Chunks whose vectors are kept for identical documents later in a run (~1.5 KiB each at 384-d).
RECENT_VECTOR_CHUNKS = 4096


class BatchEmbedder:
    def __init__(self, embedder: Embedder, parsers: int) -> None:
        self.embedder = embedder
        self.parsers = parsers
        # Vectors of documents embedded lately, by content (with the document they came from): an
        # identical document at another URI met before its twin is committed (the same file twice
        # in one run) is not embedded twice.
        self._recent: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._recent_chunks = 0
        self._lock = threading.Lock()

    def embed(self, batch: list[Prepared], parsing: int) -> None:
        """Set the vectors of every document in ``batch``.

        ``parsing``: documents being parsed meanwhile. Each parser process holds a core while it
        works, and torch with as many threads as cores would fight it: the embedder leaves the
        busy parsers their cores and takes every core once nothing is left to parse."""
        firsts, todo, twins = self._dedupe(batch)
        texts = [p.text for r in todo for p in r.pieces]
        busy = min(parsing, self.parsers)
        threads = max(1, self.embedder.threads - busy)
        if texts:
            vectors = self.embedder.embed_documents(texts, threads=threads)
            start = 0
            for r in todo:
                r.vectors = vectors[start : start + len(r.pieces)]
                start += len(r.pieces)
        for r, first in twins:
            r.vectors, r.reused = first.vectors, True
        self._remember(firsts)

    def _dedupe(
        self, batch: list[Prepared]
    ) -> tuple[dict[str, Prepared], list[Prepared], list[tuple[Prepared, Prepared]]]:
        """The first document of each content, the documents to embed, and those identical to
        one of them in this batch. A document identical to one embedded lately gets its vectors
        here and now."""
        firsts: dict[str, Prepared] = {}
        todo: list[Prepared] = []
        twins: list[tuple[Prepared, Prepared]] = []
        with self._lock:
            for r in batch:
                key = _twin_key(r)
                known = self._recent.get(key)
                if known is not None and known[0] != r.doc_id:
                    self._recent.move_to_end(key)
                    r.vectors, r.reused = known[1], True
                elif (first := firsts.get(key)) is not None and first.doc_id != r.doc_id:
                    twins.append((r, first))
                else:
                    firsts.setdefault(key, r)
                    todo.append(r)
        return firsts, todo, twins

    def _remember(self, firsts: dict[str, Prepared]) -> None:
        with self._lock:
            for key, r in firsts.items():
                if r.vectors is None:
                    continue
                if key not in self._recent:
                    self._recent_chunks += len(r.pieces)
                self._recent[key] = (r.doc_id, r.vectors)
            while self._recent_chunks > RECENT_VECTOR_CHUNKS and len(self._recent) > 1:
                _, (_, dropped) = self._recent.popitem(last=False)
                self._recent_chunks -= len(dropped)


def _twin_key(r: Prepared) -> str:
    """Identical bytes chunked into identical texts: the same vectors."""
    texts = hashlib.sha256("\x00".join(p.text for p in r.pieces).encode()).hexdigest()
    return f"{r.digest}:{texts}"
