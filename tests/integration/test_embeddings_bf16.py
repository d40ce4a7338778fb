"""bfloat16 embeddings: used only where the CPU runs them natively and they agree with float32."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from appliance.embeddings import sentence_transformers as st
from appliance.embeddings.sentence_transformers import SentenceTransformerEmbedder, bf16_accelerated

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def texts(kb_paragraphs: list[str]) -> list[str]:
    return kb_paragraphs[::2]


def embed(model_dir: Path, dtype: str, texts: list[str]) -> tuple[np.ndarray, SentenceTransformerEmbedder]:
    emb = SentenceTransformerEmbedder("m", model_dir, threads=2, dtype=dtype)
    try:
        emb.start()
        return emb.embed_documents(texts), emb
    finally:
        emb.close()


def test_auto_follows_the_cpu() -> None:
    assert bf16_accelerated(["AVX2", "AVX-512", "AMX-BF16"])
    assert not bf16_accelerated(["AVX2", "AVX-512", "AVX-512 VNNI"])


def test_bfloat16_vectors_agree_with_float32(minilm_dir: Path, texts: list[str]) -> None:
    ref, fp32 = embed(minilm_dir, "float32", texts)
    out, bf16 = embed(minilm_dir, "bfloat16", texts)
    assert fp32.dtype == "float32" and bf16.dtype == "bfloat16"
    assert bf16.bf16_min_cosine is not None and bf16.bf16_min_cosine >= st.MIN_BF16_COSINE
    assert out.dtype == np.float32 and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    cosines = (ref * out).sum(axis=1)
    assert cosines.min() > 0.999, cosines.min()
    # The same nearest neighbours: what retrieval depends on.
    eye = 2 * np.eye(len(texts))
    assert ((ref @ ref.T - eye).argmax(axis=1) == (out @ out.T - eye).argmax(axis=1)).mean() >= 0.95


def test_disagreement_keeps_float32(
    minilm_dir: Path, texts: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # No real model disagrees this much; an impossible bar stands in for one that does.
    monkeypatch.setattr(st, "MIN_BF16_COSINE", 1.01)
    ref, _ = embed(minilm_dir, "float32", texts[:4])
    with caplog.at_level(logging.WARNING, logger=st.__name__):
        out, emb = embed(minilm_dir, "bfloat16", texts[:4])
    assert emb.dtype == "float32" and "disagree" in caplog.text
    assert np.allclose(out, ref, atol=1e-5)


def test_threads_per_call_are_restored(minilm_dir: Path) -> None:
    import torch

    emb = SentenceTransformerEmbedder("m", minilm_dir, threads=2, dtype="auto")
    try:
        emb.start()
        one = emb.embed_documents(["turbine warranty"], threads=1)
        assert torch.get_num_threads() == 2
        assert np.allclose(one, emb.embed_documents(["turbine warranty"]), atol=1e-3)
    finally:
        emb.close()


def test_torch_runs_on_one_thread_whoever_embeds(minilm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API's threads and ingestion's all embed; torch sees one calling thread, so it keeps one
    OpenMP team (see appliance.embeddings.base)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    seen: set[int] = set()
    encode = SentenceTransformerEmbedder._encode

    def spy(self: SentenceTransformerEmbedder, model: object, texts: list[str]) -> np.ndarray:
        seen.add(threading.get_ident())
        return encode(self, model, texts)

    monkeypatch.setattr(SentenceTransformerEmbedder, "_encode", spy)
    emb = SentenceTransformerEmbedder("m", minilm_dir, threads=2, dtype="float32")
    try:
        with ThreadPoolExecutor(3) as callers:
            vectors = list(callers.map(emb.embed_query, ["gearbox warranty", "leave policy", "router"] * 2))
        assert len(seen) == 1 and threading.get_ident() not in seen
        assert all(v.shape == (emb.dim,) for v in vectors)
        assert float(vectors[0] @ vectors[3]) > 0.999  # the same text, the same vector
    finally:
        emb.close()
