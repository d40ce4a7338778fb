"""BM25 scores do not reveal term statistics of unreadable chunks (issue 15 item 15), on the real
Edge shard and qdrant-client local mode: the store's IDF counts every chunk of the collection, so
a caller under an ACL filter gets rank-based scores once BM25 took part; adding unreadable chunks
that contain the searched word moves an admin's raw score, never the reader's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.domain import Chunk, chunk_id, document_id
from appliance.vectorstore.base import SearchFilter
from appliance.vectorstore.edge import EdgeVectorStore
from appliance.vectorstore.hybrid import FusionConfig
from appliance.vectorstore.server import QdrantServerStore

DIM = 8
ERIN = SearchFilter(acl_any=("user:erin",))


def make(kind: str, root: Path) -> EdgeVectorStore | QdrantServerStore:
    if kind == "edge":
        return EdgeVectorStore(root / "edge", FusionConfig())
    return QdrantServerStore(None, path=root / "local", fusion=FusionConfig())


def add(store: EdgeVectorStore | QdrantServerStore, texts: list[str], acl: str, start: int) -> None:
    chunks = []
    for i, text in enumerate(texts, start=start):
        doc = document_id("kb", f"file:///kb/{i}.md")
        chunks.append(
            Chunk(chunk_id(doc, 0, text), doc, "kb", f"file:///kb/{i}.md", f"doc{i}", text, 0, acl=(acl,))
        )
    rng = np.random.default_rng(start)
    vectors = rng.normal(size=(len(chunks), DIM)).astype(np.float32)
    store.upsert("kb", chunks, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    store.flush("kb")


def scores(store: EdgeVectorStore | QdrantServerStore, mode: str, filter: SearchFilter | None) -> list[float]:
    query = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)
    hits = store.search("kb", query, "zebra migration", filter, 5, mode=mode)  # type: ignore[arg-type]
    return [round(h.score, 6) for h in hits]


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
def test_unreadable_chunks_do_not_move_a_readers_scores(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    try:
        store.ensure_collection("kb", DIM)
        add(
            store, ["The zebra migration starts in July.", "Lions rest in the shade at noon."], "user:erin", 0
        )
        add(store, ["Board minutes on the budget."] * 3, "user:carol", 10)
        before = {m: scores(store, m, ERIN) for m in ("bm25", "hybrid")}
        admin_before = scores(store, "bm25", None)
        # Carol's chunks now name the zebra: the collection's IDF of "zebra" drops.
        add(store, [f"Zebra report {i}: zebra counts." for i in range(6)], "user:carol", 20)
        assert scores(store, "bm25", None)[0] != admin_before[0]  # raw scores for admins
        for mode, seen in before.items():
            assert scores(store, mode, ERIN) == seen, mode
        # What the reader gets says the order only.
        assert before["bm25"] == sorted(before["bm25"], reverse=True) and before["bm25"][0] < 0.05
    finally:
        store.close()
