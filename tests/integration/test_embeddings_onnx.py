"""The ONNX embedder against the sentence-transformers one: same vectors, same token counts.

The export runs once per machine (then it is copied from the per-user cache into each data dir),
so on a fresh CI machine this module also proves the offline export and the int8 verification.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.embeddings.onnx import MIN_INT8_COSINE, OnnxEmbedder
from appliance.embeddings.sentence_transformers import SentenceTransformerEmbedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(minilm_dir: Path) -> Path:
    return minilm_dir


@pytest.fixture(scope="module")
def texts(kb_paragraphs: list[str]) -> list[str]:
    return kb_paragraphs[::3] + ["VPN?", "年假", "alpha beta " * 300]  # short, Chinese, and past max_tokens


@pytest.fixture(scope="module")
def reference(model_dir: Path, texts: list[str]) -> np.ndarray:
    st = SentenceTransformerEmbedder("ref", model_dir, threads=2, dtype="float32")
    try:
        return st.embed_documents(texts)
    finally:
        st.close()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data") / "models" / "onnx"


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_vectors_agree_with_sentence_transformers(
    model_dir: Path, cache: Path, texts: list[str], reference: np.ndarray, quantize: str
) -> None:
    emb = OnnxEmbedder("all-minilm-l6-v2", model_dir, cache, quantize, threads=1, batch_size=4)  # type: ignore[arg-type]
    emb.start()
    try:
        assert (emb.dim, emb.max_tokens) == (384, 256)
        vectors = emb.embed_documents(texts)
        assert vectors.shape == reference.shape and vectors.dtype == np.float32
        assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
        cosines = np.sum(vectors * reference, axis=1)
        floor = 0.9999 if quantize == "none" else MIN_INT8_COSINE
        assert cosines.min() >= floor, (emb.variant, cosines.min())
        # Sorting by length inside must not reorder the output. int8 activations are scaled per
        # batch, so there a text's vector moves a little with its batch mates.
        again = np.stack([emb.embed_query(texts[5]), *emb.embed_documents(texts[::-1])[::-1]])
        agreement = np.sum(again * np.vstack([vectors[5], vectors]), axis=1)
        assert agreement.min() >= (0.99999 if quantize == "none" else 0.995), agreement.min()
        if quantize == "int8":
            manifest = json.loads(next(cache.glob("*/manifest.json")).read_text())
            assert emb.variant == ("int8" if manifest["int8_ok"] else "fp32")
            assert manifest["int8_min_cosine"] == emb.int8_min_cosine
    finally:
        emb.close()
    assert not list(cache.glob("*.partial-*")), "a staging folder was left behind"


def test_token_counts_match_the_torch_tokenizer(model_dir: Path, cache: Path, texts: list[str]) -> None:
    st = SentenceTransformerEmbedder("ref", model_dir)
    emb = OnnxEmbedder("all-minilm-l6-v2", model_dir, cache, "none")
    try:
        assert [emb.count_tokens(t) for t in texts] == [st.count_tokens(t) for t in texts]
        assert emb.count_tokens("alpha beta " * 300) > emb.max_tokens  # counting never truncates
    finally:
        st.close()
        emb.close()


def test_int8_that_disagrees_is_not_used(
    model_dir: Path, cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Forcing a failed verification: rewrite the stored verdict of a copied export.
    OnnxEmbedder("all-minilm-l6-v2", model_dir, cache, "none").start()
    folder = next(p for p in cache.iterdir() if (p / "manifest.json").is_file())
    copy = tmp_path / "onnx" / folder.name
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "int8_ok": False, "int8_min_cosine": 0.9}))
    emb = OnnxEmbedder("all-minilm-l6-v2", model_dir, tmp_path / "onnx", "int8")
    with caplog.at_level(logging.WARNING, logger="appliance.embeddings.onnx"):
        emb.start()
    assert emb.variant == "fp32"
    assert "disagree with fp32" in caplog.text and "0.9" in caplog.text
