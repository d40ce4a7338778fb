"""The BM25 tokenizer is versioned per collection: a collection made before jieba (sparse vector
"bm25", character n-grams) keeps encoding and searching that way after the upgrade, and a new
collection uses Chinese words (sparse vector "bm25-v2"). Real Edge shard and qdrant-client local
mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from appliance.domain import EVERYONE, Chunk, chunk_id, document_id
from appliance.vectorstore import edge, server
from appliance.vectorstore.edge import EdgeVectorStore
from appliance.vectorstore.hybrid import CURRENT_SPARSE, SPARSE_NAMES, FusionConfig
from appliance.vectorstore.server import QdrantServerStore

DIM = 8
TEXTS = [
    "采购GPU服务器等IT硬件，须由信息技术部出具技术评审意见后方可发起。",
    "员工出差前须通过OA系统提交出差申请，经部门负责人审批后方可出行。",
    "机房温度应控制在18℃至27℃之间，值班人员每2小时巡检一次。",
]


def make(kind: str, root: Path) -> EdgeVectorStore | QdrantServerStore:
    if kind == "edge":
        return EdgeVectorStore(root / "edge", FusionConfig())
    return QdrantServerStore(None, path=root / "local", fusion=FusionConfig())


def chunks() -> tuple[list[Chunk], np.ndarray]:
    rng = np.random.default_rng(3)
    out = []
    for i, text in enumerate(TEXTS):
        doc = document_id("zh", f"file:///zh/{i}.md")
        out.append(
            Chunk(
                chunk_id(doc, 0, text), doc, "zh", f"file:///zh/{i}.md", f"doc{i}", text, 0, acl=(EVERYONE,)
            )
        )
    vectors = rng.normal(size=(len(out), DIM)).astype(np.float32)
    return out, vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def keyword_top(store: EdgeVectorStore | QdrantServerStore, query: str) -> str:
    hits = store.search("zh", np.ones(DIM, dtype=np.float32), query, None, 1, mode="bm25")
    assert hits, query
    return hits[0].chunk.text


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
def test_a_collection_from_before_jieba_keeps_its_tokenizer(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store as it was before jieba: new collections got the character n-gram vector "bm25".
    with monkeypatch.context() as old:
        old.setattr(edge if kind == "edge" else server, "CURRENT_SPARSE", SPARSE_NAMES[1])
        before = make(kind, tmp_path)
        before.ensure_collection("zh", DIM)
        texts, vectors = chunks()
        before.upsert("zh", texts[:2], vectors[:2])
        before.flush("zh")
        before.close()
    upgraded = make(kind, tmp_path)
    upgraded.ensure_collection("zh", DIM)
    assert upgraded._sparse_name("zh") == "bm25"
    upgraded.upsert("zh", texts[2:], vectors[2:])  # new documents are encoded the old way too
    upgraded.flush("zh")
    assert keyword_top(upgraded, "买服务器要哪个部门评审？") == TEXTS[0]
    assert keyword_top(upgraded, "机房温度范围") == TEXTS[2]
    upgraded.close()


@pytest.mark.parametrize("kind", ["edge", "qdrant-local"])
def test_a_new_collection_searches_chinese_words(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    store.ensure_collection("zh", DIM)
    assert store._sparse_name("zh") == CURRENT_SPARSE == SPARSE_NAMES[2]
    texts, vectors = chunks()
    store.upsert("zh", texts, vectors)
    store.flush("zh")
    assert keyword_top(store, "买服务器要哪个部门评审？") == TEXTS[0]
    assert keyword_top(store, "出差申请在哪个系统提交") == TEXTS[1]
    # Reopened, the collection is still read with the tokenizer it was built with.
    store.close()
    again = make(kind, tmp_path)
    assert again._sparse_name("zh") == SPARSE_NAMES[2]
    assert keyword_top(again, "机房温度范围") == TEXTS[2]
    again.close()


def test_bm25_encoded_ahead_scores_the_same_and_is_taken_by_the_upsert(tmp_path: Path) -> None:
    """Ingestion encodes a document's BM25 vectors on its look-ahead threads (``encode_ahead``):
    the upsert takes them, the keyword ranking is the one the upsert's own encoding gives, and
    nothing stays behind."""
    ranked = []
    for ahead in (False, True):
        store = EdgeVectorStore(tmp_path / f"edge-{ahead}", FusionConfig())
        try:
            store.ensure_collection("zh", DIM)
            data, vectors = chunks()
            if ahead:
                store.encode_ahead("zh", [c.text for c in data])
                assert len(store._ahead) == len(data)
            store.upsert("zh", data, vectors)
            assert store._ahead == {}
            hits = store.search("zh", np.ones(DIM, dtype=np.float32), "出差申请 审批", None, 3, mode="bm25")
            ranked.append([(h.chunk.text, round(h.score, 6)) for h in hits])
        finally:
            store.close()
    assert ranked[0] == ranked[1] and ranked[0][0][0] == TEXTS[1]
