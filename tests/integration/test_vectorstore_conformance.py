"""One conformance suite for every VectorStore adapter, and their congruence.

Adapters: the Qdrant Edge shard; qdrant-client against a Qdrant server when ``QDRANT_URL`` names
one (marker ``services``); and qdrant-client's local mode, the stand-in when no server is around.
Every adapter must pass the same behaviour tests, and for the same inputs return the same top-k
ids as Edge (up to equal scores), as qdrant-client's own congruence tests check.
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.domain import EVERYONE, Chunk, InvalidRequest, ScoredChunk, chunk_id, document_id
from appliance.vectorstore.base import SearchFilter
from appliance.vectorstore.edge import EdgeVectorStore
from appliance.vectorstore.hybrid import FusionConfig
from appliance.vectorstore.server import QdrantServerStore

DIM = 24
KB = Path(__file__).resolve().parents[1] / "fixtures" / "kb"
QDRANT_URL = os.environ.get("QDRANT_URL")
_names = itertools.count()

ADAPTERS = [
    "edge",
    "qdrant-local",
    pytest.param(
        "qdrant-server",
        marks=[
            pytest.mark.services,
            pytest.mark.skipif(not QDRANT_URL, reason="set QDRANT_URL to test against a Qdrant server"),
        ],
    ),
]


def make_store(kind: str, root: Path, fusion: FusionConfig) -> EdgeVectorStore | QdrantServerStore:
    match kind:
        case "edge":
            return EdgeVectorStore(root / "edge", fusion)
        case "qdrant-local":
            return QdrantServerStore(None, path=root / "local", fusion=fusion)
        case _:
            prefix = f"kbtest{uuid.uuid4().hex[:8]}_"
            return QdrantServerStore(
                QDRANT_URL, os.environ.get("QDRANT_API_KEY"), fusion=fusion, prefix=prefix
            )


def corpus() -> list[tuple[Chunk, np.ndarray]]:
    """The labelled set's paragraphs as chunks, with seeded random unit vectors; ACLs and dates vary
    by document so every filter has something to exclude."""
    rng = np.random.default_rng(7)
    out = []
    for n, path in enumerate(sorted(p for p in KB.iterdir() if p.suffix in (".md", ".txt", ".html"))):
        uri = path.as_uri()
        doc = document_id("c", uri)
        paragraphs = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
        acl = ("group:finance",) if path.name.startswith("finance") else (EVERYONE,)
        for i, text in enumerate(paragraphs):
            vec = rng.normal(size=DIM).astype(np.float32)
            chunk = Chunk(
                id=chunk_id(doc, i, str(hash(text))),
                document_id=doc,
                collection="c",
                uri=uri,
                title=path.name,
                text=text,
                index=i,
                acl=acl,
                source=KB.as_uri() if n % 2 == 0 else "file:///elsewhere",
                modified=1_700_000_000.0 + n * 86400,
            )
            out.append((chunk, vec / np.linalg.norm(vec)))
    return out


@pytest.fixture(scope="module")
def data() -> list[tuple[Chunk, np.ndarray]]:
    return corpus()


@pytest.fixture(scope="module", params=ADAPTERS)
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    s = make_store(request.param, tmp_path_factory.mktemp(request.param), FusionConfig(prefetch=20))
    yield s
    for name in s.collections():
        s.drop_collection(name)
    s.close()


def fill(store, data) -> str:  # type: ignore[no-untyped-def]
    name = f"conf{next(_names)}"
    store.ensure_collection(name, DIM)
    store.upsert(name, [c for c, _ in data], np.stack([v for _, v in data]))
    store.flush(name)
    return name


@pytest.fixture(scope="module")
def filled(store, data) -> str:  # type: ignore[no-untyped-def]
    """Read-only tests share one filled collection per adapter."""
    return fill(store, data)


@pytest.fixture()
def scratch(store, data) -> tuple[str, list]:  # type: ignore[no-untyped-def]
    """Tests that write get their own small collection: the first three documents."""
    docs = list(dict.fromkeys(c.document_id for c, _ in data))[:3]
    subset = [(c, v) for c, v in data if c.document_id in docs]
    return fill(store, subset), subset


def ids(hits: list[ScoredChunk]) -> list[str]:
    return [h.chunk.id for h in hits]


# -- behaviour every adapter must show --------------------------------------------------------------


def test_upsert_count_get_and_collections(store, filled, data) -> None:  # type: ignore[no-untyped-def]
    assert store.count(filled) == len(data)
    assert filled in store.collections()
    first = data[0][0]
    (got,) = store.get(filled, [first.id])
    assert (got.text, got.uri, got.acl, got.source, got.modified) == (
        first.text,
        first.uri,
        first.acl,
        first.source,
        first.modified,
    )
    assert store.count("never-made") == 0


def test_missing_collection_and_wrong_dimension_are_clear_errors(store, filled) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidRequest, match="does not exist"):
        store.search("never-made", np.ones(DIM, dtype=np.float32), "x", None, 3)
    with pytest.raises(InvalidRequest, match="dimensional"):
        store.ensure_collection(filled, DIM + 1)
    store.ensure_collection(filled, DIM)  # same dimension: a no-op


def test_dense_search_finds_the_exact_vector_first(store, filled, data) -> None:  # type: ignore[no-untyped-def]
    chunk, vec = data[11]
    hits = store.search(filled, vec, "", None, 3, mode="dense")
    assert hits[0].chunk.id == chunk.id
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_bm25_finds_rare_terms_in_english_and_chinese(store, filled) -> None:  # type: ignore[no-untyped-def]
    zero = np.zeros(DIM, dtype=np.float32)
    top = store.search(filled, zero, "GlobalProtect client", None, 3, mode="bm25")[0]
    assert top.chunk.title == "it_vpn_guide.html" and "GlobalProtect" in top.chunk.text
    top = store.search(filled, zero, "调休须在多长时间内使用", None, 3, mode="bm25")[0]
    assert top.chunk.title == "zh_attendance_policy.md" and "调休" in top.chunk.text
    top = store.search(filled, zero, "一线城市 hotel 住宿标准", None, 3, mode="bm25")[0]
    assert top.chunk.title == "mixed_expense_system.md"


def test_hybrid_fuses_both_sides(store, filled, data) -> None:  # type: ignore[no-untyped-def]
    # The dense side points at one chunk, the keyword side at another: both make the top 2.
    target, vec = data[3]
    hits = store.search(filled, vec, "BrewMaster descaling citric", None, 2)
    titles = {h.chunk.title for h in hits}
    assert target.id in ids(hits) and "product_coffee_machine.txt" in titles


def test_overwrite_replaces_text_and_keyword_index(store, scratch) -> None:  # type: ignore[no-untyped-def]
    filled, data = scratch
    chunk, vec = data[0]
    changed = Chunk(**{**chunk.__dict__, "text": "zanzibar quokka paragraph"})
    store.upsert(filled, [changed], vec[None, :])
    store.flush(filled)
    assert store.count(filled) == len(data)
    assert store.get(filled, [chunk.id])[0].text == "zanzibar quokka paragraph"
    hits = store.search(filled, np.zeros(DIM, dtype=np.float32), "quokka", None, 3, mode="bm25")
    assert ids(hits) == [chunk.id]
    old_term = next(w for w in chunk.text.split() if len(w) > 6)
    hits = store.search(filled, np.zeros(DIM, dtype=np.float32), old_term, None, 50, mode="bm25")
    assert chunk.id not in ids(hits)


def test_delete_documents_and_chunks(store, scratch) -> None:  # type: ignore[no-untyped-def]
    filled, data = scratch
    doc = data[0][0].document_id
    in_doc = [c.id for c, _ in data if c.document_id == doc]
    store.delete(filled, [doc])
    store.flush(filled)
    assert store.count(filled) == len(data) - len(in_doc)
    assert store.get(filled, in_doc) == []
    last = data[-1][0].id
    store.delete_chunks(filled, [last])
    store.flush(filled)
    assert store.count(filled) == len(data) - len(in_doc) - 1
    hits = store.search(filled, data[-1][1], "", None, 5, mode="dense")
    assert last not in ids(hits)


def test_acl_filter_hides_what_a_principal_may_not_read(store, filled, data) -> None:  # type: ignore[no-untyped-def]
    finance_chunk, vec = next((c, v) for c, v in data if c.acl == ("group:finance",))
    employee = SearchFilter(acl_any=(EVERYONE, "user:eve", "group:sales"))
    for mode in ("dense", "bm25", "hybrid"):
        hits = store.search(filled, vec, finance_chunk.text, employee, 10, mode=mode)
        assert hits, mode
        assert all(h.chunk.acl == (EVERYONE,) for h in hits), mode
    finance = SearchFilter(acl_any=(EVERYONE, "group:finance"))
    assert store.search(filled, vec, "", finance, 1, mode="dense")[0].chunk.id == finance_chunk.id
    # No token at all grants nothing.
    assert store.search(filled, vec, finance_chunk.text, SearchFilter(acl_any=()), 5) == []


def test_document_uri_source_and_date_filters(store, filled, data) -> None:  # type: ignore[no-untyped-def]
    chunk, vec = data[20]
    probe = np.ones(DIM, dtype=np.float32) / np.sqrt(DIM)

    def search(flt: SearchFilter) -> list[ScoredChunk]:
        return store.search(filled, probe, "policy", flt, 50)

    assert {h.chunk.document_id for h in search(SearchFilter(document_ids=(chunk.document_id,)))} == {
        chunk.document_id
    }
    assert {h.chunk.uri for h in search(SearchFilter(uris=(chunk.uri,)))} == {chunk.uri}
    assert {h.chunk.source for h in search(SearchFilter(sources=("file:///elsewhere",)))} == {
        "file:///elsewhere"
    }
    after = SearchFilter(modified_after=chunk.modified)
    assert search(after) and all(h.chunk.modified >= chunk.modified for h in search(after))
    window = SearchFilter(modified_after=chunk.modified, modified_before=chunk.modified)
    assert {h.chunk.document_id for h in search(window)} == {chunk.document_id}
    assert search(SearchFilter(document_ids=("nope",))) == []


def test_per_document_cap(store, filled, data) -> None:  # type: ignore[no-untyped-def]
    # The fusion configuration is the caller's (the retriever's), per search.
    capped = FusionConfig(prefetch=20, max_per_document=1)
    query = "leave sick parental annual days"
    loose = store.search(filled, np.zeros(DIM, dtype=np.float32), query, None, 4, mode="bm25")
    tight = store.search(filled, np.zeros(DIM, dtype=np.float32), query, None, 4, mode="bm25", fusion=capped)
    assert len({h.chunk.document_id for h in loose}) < 4  # the leave policy dominates uncapped
    assert len({h.chunk.document_id for h in tight}) == 4


@pytest.mark.parametrize("mode", ["hybrid", "dense", "bm25"])
def test_search_returns_the_stored_vectors_when_asked(store, filled, data, mode) -> None:  # type: ignore[no-untyped-def]
    # One call gives the hits and their vectors: hits found by BM25 alone carry theirs too.
    chunk, vec = data[3]
    stored = {c.id: v for c, v in data}
    query = "BrewMaster descaling citric"
    plain = store.search(filled, vec, query, None, 6, mode=mode)
    hits = store.search(filled, vec, query, None, 6, mode=mode, with_vectors=True)
    assert ids(hits) == ids(plain) and len(hits) >= 2  # BM25 alone matches two chunks
    assert all(h.vector is None for h in plain)
    for h in hits:
        assert h.vector is not None and h.vector.shape == (DIM,)
        np.testing.assert_allclose(h.vector, stored[h.chunk.id], atol=1e-5)


# -- congruence with Edge ---------------------------------------------------------------------------


def assert_same_ranking(a: list[ScoredChunk], b: list[ScoredChunk]) -> None:
    """Same ids in the same order; where they differ, the scores must tie (order among equals is
    not part of the contract)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.score == pytest.approx(y.score, rel=1e-4, abs=1e-5), (ids(a), ids(b))
        if x.chunk.id != y.chunk.id:
            assert {h.chunk.id for h in a if h.score == pytest.approx(x.score, rel=1e-4)} == {
                h.chunk.id for h in b if h.score == pytest.approx(x.score, rel=1e-4)
            }


@pytest.mark.parametrize("other", [a for a in ADAPTERS if a != "edge"])
def test_adapters_return_the_same_top_k_as_edge(other, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    kind = other if isinstance(other, str) else other.values[0]
    fusion = FusionConfig(prefetch=15, max_per_document=2)
    stores = [make_store("edge", tmp_path, fusion), make_store(kind, tmp_path, fusion)]
    questions = [line for line in (KB / "qa.jsonl").read_text().splitlines() if line]
    rng = np.random.default_rng(11)
    try:
        for s in stores:
            s.ensure_collection("cong", DIM)
            s.upsert("cong", [c for c, _ in data], np.stack([v for _, v in data]))
            s.flush("cong")
        filters = [
            None,
            SearchFilter(acl_any=(EVERYONE, "user:eve")),
            SearchFilter(modified_after=1_700_000_000.0 + 5 * 86400),
        ]
        checked = 0
        for i, line in enumerate(questions):
            import json

            text = json.loads(line)["question"]
            vec = rng.normal(size=DIM).astype(np.float32)
            for mode, flt in itertools.product(("dense", "bm25", "hybrid"), filters[i % 3 : i % 3 + 1]):
                a, b = (s.search("cong", vec / np.linalg.norm(vec), text, flt, 5, mode=mode) for s in stores)
                assert_same_ranking(a, b)
                checked += 1
        assert checked == 3 * len(questions)
    finally:
        for s in stores:
            s.close()


def test_optimize_keeps_every_answer(store, scratch) -> None:  # type: ignore[no-untyped-def]
    name, subset = scratch
    query = subset[0][1]
    before = store.search(name, query, subset[0][0].text, None, 5)
    store.delete_chunks(name, [subset[-1][0].id])
    store.flush(name)
    store.optimize(name)
    after = store.search(name, query, subset[0][0].text, None, 5)
    assert store.count(name) == len(subset) - 1
    assert [h.chunk.id for h in after if h.chunk.id != subset[-1][0].id][:3] == [
        h.chunk.id for h in before if h.chunk.id != subset[-1][0].id
    ][:3]


def test_edge_optimize_builds_the_vector_index(tmp_path: Path) -> None:
    """Edge has no background optimiser: until `optimize` runs, nothing is indexed (brute force).
    8,000 x 384-d vectors are above its default indexing threshold."""
    dim, n = 384, 8000
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        Chunk(
            id=chunk_id("d", i, str(i)),
            document_id="d",
            collection="big",
            uri="file:///d",
            title="d",
            text=f"t{i}",
            index=i,
        )
        for i in range(n)
    ]
    store = EdgeVectorStore(tmp_path / "edge")
    try:
        store.ensure_collection("big", dim)
        for start in range(0, n, 1000):
            store.upsert("big", chunks[start : start + 1000], vectors[start : start + 1000])
        store.flush("big")
        # Sparse (BM25) vectors are always indexed; the dense ones only once optimised.
        before = store._shard("big").info().indexed_vectors_count
        exact = store.search("big", vectors[17], "", None, 1, mode="dense")
        store.optimize("big")
        assert store._shard("big").info().indexed_vectors_count - before == n
        (top,) = store.search("big", vectors[17], "", None, 1, mode="dense")
        assert top.chunk.id == exact[0].chunk.id == chunks[17].id
    finally:
        store.close()
