"""Chinese documents end to end (tests/fixtures/kb_zh: policies and reports written for the
purpose, 45 questions): real parsing, cleaning and chunking, the default (English-only) embedder,
jieba BM25 and the Edge shard. What issue 17 saw on Chinese reports must not come back: chunks of
one character, titles with Markdown marks, headings quoted instead of the sentence with the figure,
and a hybrid ranking below its BM25 leg."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import connectors
from appliance.domain import LOCAL_ADMIN, Principal
from appliance.evaluation import evaluate, load_qa
from appliance.ingestion.chunking import MIN_SHARE
from appliance.rag import answering
from appliance.rag.pipeline import citation_dicts

pytestmark = pytest.mark.slow

KB_ZH = Path(__file__).resolve().parents[1] / "fixtures" / "kb_zh"
ADMIN = Principal(LOCAL_ADMIN, "admin")


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from appliance.container import Container
    from appliance.settings import load_settings

    c = Container(load_settings(data_dir=tmp_path_factory.mktemp("zh") / "data", log_level="WARNING"))
    try:
        source = connectors.for_source(str(KB_ZH), extensions=c.settings.ingestion.extensions)
        report = c.jobs.run([source], "zh", [], "t")
        assert report["failed"] == [] and report["added"] == 9
        yield c
    finally:
        c.close()


def all_chunks(container: Any) -> list[Any]:
    ids = [point for point, _, _ in container.store.point_index("zh")]
    return list(container.store.get("zh", ids))


def test_titles_are_clean_and_no_chunk_is_a_fragment_or_a_heading(container: Any) -> None:
    chunks = all_chunks(container)
    assert len(chunks) > 20
    titles = {c.title for c in chunks}
    assert "AI Infra研究报告 (ai_infra_report.txt)" in titles
    assert not any(t.startswith("#") for t in titles)
    floor = int(container.settings.ingestion.chunk_tokens * MIN_SHARE)
    assert min(container.embedder.count_tokens(c.text) - 2 for c in chunks) >= floor
    for chunk in chunks:
        body = [line for line in chunk.text.split("\n\n") if line not in chunk.section_path]
        assert body, chunk.text  # every chunk says something beyond its headings


def test_hybrid_is_not_below_its_legs_on_the_chinese_set(container: Any) -> None:
    items = load_qa(KB_ZH / "qa.jsonl")
    rates = {}
    for mode in ("dense", "bm25", "hybrid"):

        def search(question: str, k: int, mode: str = mode) -> list[dict[str, Any]]:
            hits, _ = container.retriever.search(question, ADMIN, "zh", k, None, mode)  # type: ignore[arg-type]
            return citation_dicts(hits)

        rates[mode] = evaluate(items, search, 5, mode=mode).retrieval
    # Word segmentation: BM25 alone finds the right document first for nearly every question.
    assert rates["bm25"]["hit@1"] >= 0.9
    one = 1 / len(items)
    assert rates["hybrid"]["hit@1"] >= max(rates["dense"]["hit@1"], rates["bm25"]["hit@1"]) - one
    assert rates["hybrid"]["hit@1"] > rates["dense"]["hit@1"] + 0.2  # the English-only embedder alone


def test_the_extractive_answer_quotes_the_figure_not_its_heading(container: Any) -> None:
    question = "2023年中国AI基础设施市场规模是多少？"
    hits, _ = container.retriever.search(question, ADMIN, "zh", 3)
    vector = container.embedder.embed_query(question)
    answer = asyncio.run(answering.extractive(question, vector, hits, container.embedder))
    assert "1,250亿元" in answer
    assert not answer.startswith("4.1")
