"""Pure retrieval logic: the multilingual BM25 encoding, weighted RRF, per-document caps, filter
narrowing and the evaluation metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.domain import InvalidRequest, Principal
from appliance.evaluation import answer_contains, evaluate, is_hit, load_qa
from appliance.retrieval import effective_filter
from appliance.vectorstore import bm25
from appliance.vectorstore.base import SearchFilter
from appliance.vectorstore.fusion import Candidate, cap_per_document, weighted_rrf

KB = Path(__file__).resolve().parents[1] / "fixtures" / "kb"


# -- BM25 encoding ---------------------------------------------------------------------------------


def test_tokenizer_1_splits_cjk_into_unigrams_and_bigrams_and_keeps_latin_words() -> None:
    # Tokenizer 1, which collections made before jieba keep (tokenizer 2: test_retrieval_quality.py).
    terms = bm25.tokenize("在 Concur 里提交报销", version=1)
    assert "concur" in terms
    assert {"提交", "报销", "里提"} <= set(terms)  # bigrams across the run
    assert {"提", "交"} <= set(terms)  # unigrams for recall
    assert "在" in terms


def test_tokenizer_drops_function_words_and_folds_plurals_and_width() -> None:
    assert bm25.tokenize("What are the Drills?") == ["drill"]
    assert bm25.tokenize("ＶＰＮ") == ["vpn"]  # NFKC folds full-width letters


def test_query_terms_match_document_terms_in_sparse_space() -> None:
    doc = bm25.encode_document("加班时间可以申请调休，调休须在三个月内使用完毕。")
    query = bm25.encode_query("调休需要在多长时间内使用？")
    shared = set(doc.indices) & set(query.indices)
    assert bm25.term_id("调休") in shared and bm25.term_id("使用") in shared
    assert query.values == [1.0] * len(query.indices)
    assert doc.indices == sorted(doc.indices)


def test_repeated_terms_saturate_and_long_documents_weigh_less() -> None:
    once = bm25.encode_document("router")
    thrice = bm25.encode_document("router router router")
    w = dict(zip(once.indices, once.values, strict=True))[bm25.term_id("router")]
    w3 = dict(zip(thrice.indices, thrice.values, strict=True))[bm25.term_id("router")]
    assert w < w3 < 3 * w  # term frequency counts, with saturation
    long = bm25.encode_document("router " + " ".join(f"w{i}" for i in range(300)))
    wl = dict(zip(long.indices, long.values, strict=True))[bm25.term_id("router")]
    assert wl < w


def test_a_query_of_only_function_words_has_no_keyword_side() -> None:
    assert bm25.encode_query("what is the").indices == []


# -- fusion ----------------------------------------------------------------------------------------


def _cands(ids: str, doc_of: dict[str, str] | None = None) -> list[Candidate]:
    return [Candidate(i, 1.0, {"document_id": (doc_of or {}).get(i, i)}) for i in ids]


def test_rrf_rewards_agreement_and_weights_shift_the_balance() -> None:
    dense, keyword = _cands("abc"), _cands("cxb")
    fused = [c.id for c in weighted_rrf([dense, keyword], [1.0, 1.0], 60)]
    assert fused == ["c", "b", "a", "x"]  # found by both sides beats first on one side
    dense_heavy = [c.id for c in weighted_rrf([dense, keyword], [5.0, 1.0], 1)]
    keyword_heavy = [c.id for c in weighted_rrf([dense, keyword], [1.0, 5.0], 1)]
    assert dense_heavy[0] == "a" and keyword_heavy[0] == "c"
    only_dense = [c.id for c in weighted_rrf([dense, keyword], [1.0, 0.0], 60)]
    assert only_dense == ["a", "b", "c"]


def test_rrf_scores_follow_the_formula_and_ties_break_by_id() -> None:
    fused = weighted_rrf([_cands("ba"), _cands("ab")], [1.0, 1.0], 10)
    assert [c.id for c in fused] == ["a", "b"]  # equal scores: id order, the same on every adapter
    assert fused[0].score == pytest.approx(1 / 11 + 1 / 12)


def test_per_document_cap_diversifies_then_backfills() -> None:
    doc_of = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "c1": "C"}
    ranked = _cands(["a1", "a2", "a3", "b1", "c1"], doc_of)  # type: ignore[arg-type]
    assert [c.id for c in cap_per_document(ranked, 3, 1)] == ["a1", "b1", "c1"]
    assert [c.id for c in cap_per_document(ranked, 4, 2)] == ["a1", "a2", "b1", "c1"]
    # Not enough other documents: the capped ones fill up, in rank order.
    assert [c.id for c in cap_per_document(ranked[:4], 4, 1)] == ["a1", "a2", "a3", "b1"]
    assert [c.id for c in cap_per_document(ranked, 2, 0)] == ["a1", "a2"]


# -- filters ---------------------------------------------------------------------------------------


def test_client_filters_narrow_but_never_widen_access() -> None:
    employee = Principal("eve", "employee", ("sales",))
    client = SearchFilter(acl_any=("group:finance", "*"), document_ids=("d1", "d2"))
    flt = effective_filter(employee, client)
    assert flt is not None
    assert flt.acl_any == ("*", "user:eve", "group:sales")  # the client's ACL field is ignored
    assert flt.document_ids == ("d1", "d2")
    admin = effective_filter(Principal("root", "admin"), client)
    assert admin is not None and admin.acl_any is None and admin.document_ids == ("d1", "d2")


def test_narrowing_intersects_lists_and_tightens_dates() -> None:
    a = SearchFilter(document_ids=("d1", "d2"), modified_after=10.0, modified_before=50.0)
    b = SearchFilter(document_ids=("d2", "d3"), modified_after=20.0, uris=("u",))
    n = a.narrowed(b)
    assert (n.document_ids, n.uris, n.modified_after, n.modified_before) == (("d2",), ("u",), 20.0, 50.0)
    assert not n.empty_result
    assert a.narrowed(SearchFilter(document_ids=("zzz",))).empty_result


# -- evaluation ------------------------------------------------------------------------------------


def test_the_shipped_question_set_is_well_formed_and_points_at_shipped_documents() -> None:
    items = load_qa(KB / "qa.jsonl")
    assert len(items) >= 25
    assert all((KB / it.doc).is_file() and it.answer_any for it in items)
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in it.question) for it in items) >= 5


def test_load_qa_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "q", "doc": "d"}) + "\n" + json.dumps({"question": "q"}) + "\n")
    with pytest.raises(InvalidRequest, match=r"qa.jsonl:2: missing field 'doc'"):
        load_qa(path)
    path.write_text("not json\n")
    with pytest.raises(InvalidRequest, match=r":1:"):
        load_qa(path)


def test_metrics_by_document() -> None:
    items = load_qa(KB / "qa.jsonl")[:3]
    answers = {
        items[0].question: [
            {"uri": "file:///x/other.md", "title": ""},
            {"uri": f"file:///kb/{items[0].doc}"},
        ],
        items[1].question: [{"uri": "file:///x/other.md", "title": f"Title ({items[1].doc})"}],
        items[2].question: [{"uri": "file:///x/nope.md", "title": "nope"}],
    }
    report = evaluate(items, lambda q, k: answers[q], k=5)
    assert [r.rank for r in report.items] == [2, 1, None]
    assert report.retrieval == {"hit@1": 0.3333, "hit@k": 0.6667, "mrr": 0.5}
    assert report.generation is None

    def ask(q: str) -> tuple[str, list[dict]]:
        return ("It is 25 days." if q == items[0].question else "No idea."), answers[q]

    report = evaluate(items, lambda q, k: answers[q], k=1, ask=ask)
    assert report.retrieval["hit@k"] == pytest.approx(0.3333)
    assert report.generation == {"answer_contains": 0.3333, "citation_correct": 0.6667}


def test_hits_match_percent_encoded_uris_and_answers_ignore_case() -> None:
    assert is_hit({"uri": "file:///kb/%E5%B9%B4%E5%81%87.md"}, "年假.md")
    assert answer_contains("Hold the RESET button", ["reset button"])
    assert not answer_contains("nothing", ["reset"])
