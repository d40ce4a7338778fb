"""Which answer mode a question gets: the model's size (GGUF header, safetensors), the setting, the
request, the OpenAI model id; and the extractive answer cut into its sentences for streaming."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import numpy as np
import pytest

from appliance.domain import Chunk, ScoredChunk
from appliance.models import parse_size, read_gguf_header, resolve_llm, safetensors_parameters
from appliance.rag import answering, grounding
from appliance.rag.modes import auto_mode, choose, split_mode


def gguf(path: Path, meta: dict[str, str], tensors: dict[str, tuple[int, ...]]) -> Path:
    """A GGUF file's header as llama.cpp writes it (v3: string metadata, tensor descriptions),
    with no tensor data: all the size reader looks at."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<Q", len(raw)) + raw

    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta))
    for key, value in meta.items():
        out += text(key) + struct.pack("<I", 8) + text(value)
    offset = 0
    for name, shape in tensors.items():
        out += (
            text(name) + struct.pack(f"<I{len(shape)}Q", len(shape), *shape) + struct.pack("<IQ", 0, offset)
        )
        offset += 32
    path.write_bytes(out)
    return path


def test_size_labels_parse_as_their_authors_write_them() -> None:
    assert parse_size("135M") == 135_000_000
    assert parse_size("1.5B") == 1_500_000_000
    assert parse_size("8x7B") == 56_000_000_000
    assert parse_size("7b-instruct") == 7_000_000_000
    assert parse_size("") is None and parse_size(None) is None and parse_size("large") is None


def test_auto_is_extractive_below_a_billion_parameters_and_grounded_from_it() -> None:
    assert auto_mode(135_000_000) == "extractive"
    assert auto_mode(999_999_999) == "extractive"
    assert auto_mode(1_000_000_000) == "grounded"
    assert auto_mode(None) == "grounded"  # a remote model of unknown size


def test_the_request_wins_over_the_setting_and_auto_follows_the_model() -> None:
    auto = {"small": "extractive", "big": "grounded"}
    assert choose(None, "auto", "small", auto) == "extractive"
    assert choose(None, "auto", "big", auto) == "grounded"
    assert choose(None, "auto", "unlisted", auto) == "grounded"
    assert choose("abstractive", "auto", "small", auto) == "abstractive"
    assert choose(None, "extractive", "big", auto) == "extractive"
    assert choose("auto", "abstractive", "small", auto) == "extractive"


def test_model_ids_carry_a_mode_after_a_colon() -> None:
    assert split_mode("kb:grounded") == ("kb", "grounded")
    assert split_mode("smollm2-135m-instruct:extractive") == ("smollm2-135m-instruct", "extractive")
    assert split_mode("llama3:8b") == ("llama3:8b", None)  # a tag, not a mode
    assert split_mode("kb") == ("kb", None) and split_mode(":grounded") == (":grounded", None)


def test_the_packaged_model_is_small_so_auto_quotes_the_sources() -> None:
    entry = resolve_llm("default", "smollm2")
    assert entry.parameters == 135_000_000  # its general.size_label
    _, counted = read_gguf_header(entry.path)
    assert 120_000_000 < counted < 150_000_000  # the tensors agree
    assert auto_mode(entry.parameters) == "extractive"


def test_a_gguf_size_comes_from_its_label_else_its_tensors(tmp_path: Path) -> None:
    labelled = gguf(tmp_path / "big.gguf", {"general.architecture": "llama", "general.size_label": "7B"}, {})
    assert resolve_llm(str(labelled), "big").parameters == 7_000_000_000
    shapes = {"token_embd.weight": (4096, 32000), "blk.0.attn_q.weight": (4096, 4096)}
    unlabelled = gguf(tmp_path / "plain.gguf", {"general.architecture": "llama"}, shapes)
    assert resolve_llm(str(unlabelled), "plain").parameters == 4096 * 32000 + 4096 * 4096


def test_a_hugging_face_folder_is_sized_from_its_safetensors_headers(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"a": np.zeros((3, 4), np.float16), "b": np.zeros(5, np.float16)}, tmp_path / "m-1.safetensors")
    save_file({"c": np.zeros((2, 2, 2), np.float16)}, tmp_path / "m-2.safetensors")
    assert safetensors_parameters(tmp_path) == 12 + 5 + 8
    assert safetensors_parameters(tmp_path / "empty") is None


def _hit(text: str) -> ScoredChunk:
    chunk = Chunk(
        id="c1", document_id="d1", collection="kb", uri="file:///d.md", title="D", text=text, index=0
    )
    return ScoredChunk(chunk=chunk, score=1.0)


def test_the_extractive_answer_streams_one_piece_per_sentence() -> None:
    extracts = [grounding.Extract("Leave is 25 days.", 1, 0.9), grounding.Extract("It rolls over.", 2, 0.8)]
    hits = [_hit("Leave is 25 days. It rolls over.")]
    pieces = answering.evidence_pieces(extracts, hits)
    assert pieces == ["Leave is 25 days. [1]", " It rolls over. [2]"]
    assert "".join(pieces) == answering.format_evidence(extracts, hits)
    # No sentence worth quoting: the opening of the best source, in one piece, as before.
    assert answering.evidence_pieces([], hits) == [answering.format_evidence([], hits)]


def test_extractive_stream_and_text_agree_with_the_real_embedder(minilm_dir: Path) -> None:
    from appliance.embeddings.sentence_transformers import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder("minilm", minilm_dir, threads=1)
    text = (
        "Permanent employees receive 25 days of paid vacation per year. Unused vacation days may be "
        "carried over until the end of March. The office closes between Christmas and New Year."
    )
    question = "How many vacation days do employees get, and can unused days be carried over?"
    vector = embedder.embed_query(question)

    async def both() -> tuple[list[str], str]:
        pieces = [p async for p in answering.extractive_stream(question, vector, [_hit(text)], embedder)]
        return pieces, await answering.extractive(question, vector, [_hit(text)], embedder)

    pieces, whole = asyncio.run(both())
    assert "".join(pieces) == whole and "25 days" in whole
    assert len(pieces) == whole.count("[1]") >= 1


@pytest.mark.parametrize("setting", ["auto", "extractive"])
def test_settings_accept_auto_as_the_default(setting: str, tmp_path: Path) -> None:
    from appliance.settings import load_settings

    assert load_settings(data_dir=tmp_path).rag.answer_mode == "auto"
    assert load_settings(data_dir=tmp_path, rag={"answer_mode": setting}).rag.answer_mode == setting


def test_the_container_gives_each_served_model_its_auto_mode(tmp_path: Path) -> None:
    from appliance.container import Container
    from appliance.settings import load_settings

    big = gguf(tmp_path / "big.gguf", {"general.architecture": "llama", "general.size_label": "7B"}, {})
    settings = load_settings(
        data_dir=tmp_path / "data",
        inference={
            "models": [
                {"name": "seven", "backend": "llamacpp", "path": str(big)},
                {"name": "hosted", "backend": "remote", "url": "http://127.0.0.1:9/v1", "size": "500M"},
                {"name": "mystery", "backend": "remote", "url": "http://127.0.0.1:9/v1"},
            ]
        },
    )
    container = Container(settings)
    try:
        assert container.auto_modes() == {
            "smollm2-135m-instruct": "extractive",
            "seven": "grounded",
            "hosted": "extractive",
            "mystery": "grounded",
        }
    finally:
        container.close()
