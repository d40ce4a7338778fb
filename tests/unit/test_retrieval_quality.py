"""Retrieval quality rules: Chinese word segmentation for BM25 (jieba), the tokenizer versions,
distribution-based score fusion, and the extractive answer's choice of sentence."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from appliance.domain import Chunk, ScoredChunk
from appliance.rag.answering import choose_sentences, fact_bonus, is_heading, quotable_sentences
from appliance.vectorstore import bm25
from appliance.vectorstore.fusion import Candidate, dbsf, minmax, weighted_rrf
from appliance.vectorstore.hybrid import CURRENT_SPARSE, SPARSE_NAMES, SPARSE_VERSIONS, FusionConfig

# -- BM25 with jieba -------------------------------------------------------------------------------


def test_chinese_is_segmented_into_words_with_bigrams_kept_for_recall() -> None:
    terms = bm25.tokenize("2023年中国AI基础设施市场规模达到1,250亿元")
    assert {"基础设施", "基础", "设施", "市场", "规模"} <= set(terms)  # search mode: word and parts
    assert {"ai", "2023"} <= set(terms)  # Latin words and numbers inside Chinese text stay words
    assert "础设" in terms  # character bigrams too, for words the segmenter cuts differently
    assert "基础设施" not in bm25.tokenize("2023年中国AI基础设施市场规模达到1,250亿元", version=1)


def test_chinese_question_words_and_particles_are_not_search_terms() -> None:
    terms = set(bm25.tokenize("采购金额达到多少需要招标？"))
    assert {"采购", "金额", "招标"} <= terms
    assert not terms & {"多少", "需要"}  # what every question says is no evidence


def test_a_three_character_word_matches_only_with_segmentation() -> None:
    # "服务器" in both: with bigrams alone, "服务" and "务器" also match "服务" (service) elsewhere.
    doc = bm25.encode_document("GPU服务器的采购须由信息技术部出具技术评审意见。")
    query = bm25.encode_query("购买服务器之前要做什么评审？")
    assert bm25.term_id("服务器") in set(doc.indices) & set(query.indices)
    v1 = bm25.encode_query("购买服务器之前要做什么评审？", version=1)
    assert bm25.term_id("服务器") not in v1.indices


def test_jieba_loads_offline_once_with_its_cache_in_the_temp_folder(tmp_path: object) -> None:
    # A fresh interpreter with the egress guard on: the dictionary ships inside the wheel.
    code = textwrap.dedent(
        """
        import os, tempfile
        from appliance.egress import install_guard, prepare_offline_env
        prepare_offline_env(); install_guard()
        from appliance.vectorstore import bm25
        first = bm25._segmenter()
        assert bm25._segmenter() is first
        print(bm25.tokenize("数据中心的PUE目标值"))
        print(os.path.exists(os.path.join(tempfile.gettempdir(), "jieba.cache")))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    terms, cached = result.stdout.strip().splitlines()
    assert "'数据中心'" in terms and "'pue'" in terms
    assert cached == "True"


def test_kana_and_hangul_keep_unigrams_and_bigrams() -> None:
    assert {"カ", "カメ", "メラ"} <= set(bm25.tokenize("カメラ"))
    assert {"서울", "울"} <= set(bm25.tokenize("서울"))


def test_new_collections_get_the_current_tokenizer_and_old_names_keep_theirs() -> None:
    assert SPARSE_VERSIONS[CURRENT_SPARSE] == bm25.TOKENIZER_VERSION == 2
    assert SPARSE_NAMES[1] == "bm25"  # what collections made before jieba are called
    assert set(SPARSE_NAMES) == set(bm25.TOKENIZER_VERSIONS)


# -- fusion ----------------------------------------------------------------------------------------


def _ranked(scores: dict[str, float]) -> list[Candidate]:
    return [Candidate(i, s, {"document_id": i}) for i, s in sorted(scores.items(), key=lambda x: -x[1])]


def test_dbsf_normalises_each_list_by_its_own_spread() -> None:
    dense = _ranked({"a": 0.9, "b": 0.5, "c": 0.1})
    fused = {c.id: c.score for c in dbsf([dense], [1.0])}
    mean, std = 0.5, (0.32 / 3) ** 0.5
    assert fused["a"] == pytest.approx((0.9 - (mean - 3 * std)) / (6 * std))
    assert fused["b"] == pytest.approx(0.5)
    assert dbsf([_ranked({"x": 3.0})], [1.0])[0].score == 0.5  # one score: no spread to measure


def test_dbsf_lets_the_confident_leg_decide() -> None:
    # Dense is unsure (cosines within a hair), BM25 is sure of "k" (far above its other scores).
    dense = _ranked({"d": 0.62, "k": 0.61, "e": 0.60, "f": 0.59, "g": 0.58})
    keyword = _ranked({"k": 14.0, "d": 2.0, "h": 1.8, "i": 1.7, "j": 1.6})
    assert [c.id for c in dbsf([dense, keyword], [1.0, 1.0])][0] == "k"
    # RRF sees only ranks: first and second on each side tie, and the id decides.
    assert [c.id for c in weighted_rrf([dense, keyword], [1.0, 1.0], 60)][:2] == ["d", "k"]


def test_dbsf_weights_and_ties_break_by_id() -> None:
    a, b = _ranked({"x": 1.0, "y": 0.0}), _ranked({"y": 1.0, "x": 0.0})
    assert [c.id for c in dbsf([a, b], [1.0, 1.0])] == ["x", "y"]  # a tie: the id decides
    assert [c.id for c in dbsf([a, b], [1.0, 2.0])][0] == "y"
    assert [c.id for c in dbsf([a, b], [1.0, 0.0])] == ["x", "y"]  # a zero weight drops the side


def test_minmax_scales_each_list_to_its_range_and_keeps_the_gaps() -> None:
    dense = _ranked({"a": 0.62, "b": 0.61, "c": 0.30})
    keyword = _ranked({"b": 14.0, "a": 2.0, "d": 1.0})
    fused = {c.id: c.score for c in minmax([dense, keyword], [1.0, 1.25])}
    assert fused["a"] == pytest.approx(1.0 + 1.25 * (1 / 13))
    assert fused["b"] == pytest.approx((0.31 / 0.32) + 1.25)  # sure on one side, near-top on the other
    assert fused["c"] == 0.0 and fused["d"] == 0.0  # a list's lowest, and missing elsewhere
    assert [c.id for c in minmax([dense, keyword], [1.0, 1.25])][:2] == ["b", "a"]
    assert minmax([_ranked({"x": 3.0, "y": 3.0})], [1.0])[0].score == 1.0  # no spread: all count


def test_fusion_config_picks_the_method() -> None:
    lists = [_ranked({"a": 0.9, "b": 0.1}), _ranked({"b": 9.0, "a": 1.0})]
    assert (FusionConfig().method, FusionConfig().bm25_weight) == ("minmax", 1.25)
    assert FusionConfig(method="rrf", rrf_k=60).fuse(lists, [1.0, 1.0]) == weighted_rrf(lists, [1.0, 1.0], 60)
    assert FusionConfig(method="dbsf").fuse(lists, [1.0, 1.0]) == dbsf(lists, [1.0, 1.0])
    assert FusionConfig().fuse(lists, [1.0, 1.25]) == minmax(lists, [1.0, 1.25])


# -- extractive sentence choice --------------------------------------------------------------------

REPORT = Chunk(
    id="c1",
    document_id="d1",
    collection="c",
    uri="file:///r.txt",
    title="AI Infra研究报告",
    text="4.1 中国AI基础设施市场规模分析\n\n2023年中国AI基础设施市场规模达到1,250亿元，同比增长42.6%。"
    "其中算力硬件占比约68%。",
    index=0,
    section="4.1 中国AI基础设施市场规模分析",
    section_path=("AI Infra研究报告", "4.1 中国AI基础设施市场规模分析"),
)


def test_headings_are_recognised_by_section_path_and_numbering() -> None:
    assert is_heading("4.1 中国AI基础设施市场规模分析", REPORT)
    chunk = Chunk("c2", "d", "c", "u", "t", "Intro text.\n3.2 Cooling options\nAir and liquid.", 0)
    assert is_heading("3.2 Cooling options", chunk)
    assert not is_heading("3.2 MW is the rated output.", chunk)  # a sentence, not a line heading
    assert not is_heading("Air and liquid.", chunk)


def test_a_figure_question_prefers_the_sentence_with_the_figure() -> None:
    assert fact_bonus("How many days of leave do I get?", "You get 25 days.") > 0
    assert fact_bonus("How many days of leave do I get?", "Leave is generous.") < 0
    assert fact_bonus("市场规模是多少？", "市场规模达到1,250亿元。") > 0
    assert fact_bonus("加班后的调休需要在多长时间内使用？", "调休须在三个月内使用完毕。") > 0
    assert fact_bonus("What is the VPN for?", "It encrypts traffic.") == 0


def test_the_extractive_answer_quotes_the_figure_not_the_heading() -> None:
    question = "2023年中国AI基础设施市场规模是多少？"
    candidates = quotable_sentences([ScoredChunk(REPORT, 1.0)])
    # The heading is not quotable; Chinese sentences are cut at their full stops.
    assert [s for _, s in candidates] == [
        "2023年中国AI基础设施市场规模达到1,250亿元，同比增长42.6%。",
        "其中算力硬件占比约68%。",
    ]
    picked = choose_sentences(question, candidates, np.array([0.5]), np.ones((len(candidates), 1)))
    assert picked[0].sentence.startswith("2023年中国AI基础设施市场规模达到1,250亿元")
    assert all("分析" not in p.sentence for p in picked)


def test_the_figure_outweighs_a_sentence_that_only_repeats_the_question() -> None:
    question = "How many days of paid annual leave do full-time employees get?"
    candidates = [
        (1, "Full-time employees get paid annual leave as described in this policy."),
        (1, "The entitlement is 27 days per calendar year."),
    ]
    # Equal similarity for both: words favour the first, the asked-for figure the second.
    picked = choose_sentences(question, candidates, np.array([0.5]), np.ones((2, 1)))
    assert picked[0].sentence == "The entitlement is 27 days per calendar year."


API_PAGE = Chunk(
    "c3",
    "d3",
    "pydoc",
    "file:///doc/heapq.html",
    "heapq — Heap queue algorithm",
    "Module functions\n\nheapq.heapify(x)\n\nTransform list x into a heap, in-place, in linear time.\n\n"
    "exception json.JSONDecodeError(msg, doc, pos)\n\nSubclass of ValueError with more attributes.\n\n"
    ">>> heapq.heapify(data)\n\n# make a heap from the data first\n\ncsvfile.seek(0)\n\n"
    "Previous topic\n\nCopyright © 2001-2024 Python Software Foundation. All rights reserved.",
    0,
    section_path=("heapq — Heap queue algorithm", "Module functions"),
)


def test_a_definitions_term_opens_its_sentence_and_code_and_page_furniture_are_not_quoted() -> None:
    quoted = [s for _, s in quotable_sentences([ScoredChunk(API_PAGE, 1.0)])]
    assert quoted == [
        "heapq.heapify(x): Transform list x into a heap, in-place, in linear time.",
        "exception json.JSONDecodeError(msg, doc, pos): Subclass of ValueError with more attributes.",
    ]


def test_the_question_decides_which_fact_a_sentence_must_carry() -> None:
    # "when" inside a clause is not a question about a time.
    which = "Which exception is raised when a document is invalid?"
    assert fact_bonus(which, "A JSONDecodeError is raised for an invalid document.") > 0
    assert fact_bonus(which, "This can raise an exception for invalid numbers.") < 0
    assert fact_bonus("When does the office open?", "It opens at 8.") > 0
    assert fact_bonus("In which Python version was key added?", "Changed in version 3.10: added key.") > 0
    assert fact_bonus("Which function builds a heap?", "heapq.heapify(x): Transform a list.") > 0
    # A sentence naming no function cannot say which one (as for exceptions).
    assert fact_bonus("Which function builds a heap?", "Transform a list into a heap.") < 0
    # "How do I" prefers a sentence naming an identifier, but is often answered without one.
    assert fact_bonus("How do I reset my password?", "Open the portal and choose Reset.") == 0
    # A version question is answered by a version number, not by any figure ("one argument").
    version = "In which Python version did bisect gain a key parameter?"
    assert fact_bonus(version, "key is a function of one argument.") < 0
    assert fact_bonus(version, "Changed in version 3.10: Added the key parameter.") > 0
    assert fact_bonus("哪个版本开始支持该功能？", "自 2.3 版起支持。") > 0
    assert fact_bonus("Which Windows version is supported?", "Windows 11 is supported.") > 0
    # "Which ..." asks for something named: a name inside the sentence.
    core = "Which core generator does the random module use?"
    assert fact_bonus(core, "Python uses the Mersenne Twister as the core generator.") > 0
    assert fact_bonus(core, "The generators of this module are not for security.") == 0
    # The question's own numbers: the sentence with the same ones, not with a longer number
    # containing them; and repeating them is not giving the figure asked for.
    question = "可用性低于95%时赔偿多少服务费？"
    assert fact_bonus(question, "低于95%的，赔偿50%。") > fact_bonus(
        question, "数据库不低于99.95%，赔偿10%。"
    )
    assert fact_bonus(question, "可用性低于95%时另行协商。") < 0
