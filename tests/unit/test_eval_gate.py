"""`appliance eval` as a gate: result files, baselines, drops beyond the margin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.domain import InvalidRequest
from appliance.evaluation import (
    QAItem,
    compare,
    evaluate,
    load_baseline,
    load_qa,
    parse_qa,
    result_path,
    set_name,
    write_report,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BASELINES = FIXTURES / "eval" / "baseline"
ITEMS = [QAItem("where is a", "a.md"), QAItem("where is b", "b.md"), QAItem("where is c", "c.md")]


def run(ranks: dict[str, int | None], k: int = 5, **kw):  # type: ignore[no-untyped-def]
    """A report where each question's document sits at the given rank (None: not found)."""

    def search(question: str, n: int) -> list[dict]:
        item = next(it for it in ITEMS if it.question == question)
        rank = ranks[item.doc]
        found = [{"uri": f"file:///x/other{i}.md"} for i in range(n)]
        if rank is not None:
            found[rank - 1] = {"uri": f"file:///kb/{item.doc}"}
        return found

    return evaluate(ITEMS, search, k, name="toy", **kw)


def test_set_names_come_from_the_file_or_its_corpus_folder() -> None:
    assert set_name(Path("tests/fixtures/kb/qa.jsonl")) == "kb"
    assert set_name(Path("tests/fixtures/eval/pydoc.jsonl")) == "pydoc"


def test_a_drop_beyond_the_margin_fails_and_names_the_question(tmp_path: Path) -> None:
    before = run({"a.md": 1, "b.md": 1, "c.md": 2})
    path = write_report(tmp_path, before)
    assert path == result_path(tmp_path, before) and path.name == f"{before.date}-toy.json"
    baseline = load_baseline(path)
    assert compare(run({"a.md": 1, "b.md": 1, "c.md": 2}), baseline, 0.02, "b").passed
    after = run({"a.md": 1, "b.md": 2, "c.md": None})
    gate = compare(after, baseline, 0.02, str(path))
    assert not gate.passed
    assert {d.metric for d in gate.drops} == {"retrieval.hit@1", "retrieval.hit@k", "retrieval.mrr"}
    assert gate.newly_missed == ["where is c"]
    assert gate.as_dict()["drops"][0]["by"] > 0.02
    # The margin is inclusive: hit@1 falls by exactly a third, mrr by 1/6; hit@k not at all.
    loose = compare(run({"a.md": 1, "b.md": 2, "c.md": 2}), baseline, 0.3334, "b")
    assert loose.passed and loose.newly_missed == []
    # Improvements never fail.
    assert compare(run({"a.md": 1, "b.md": 1, "c.md": 1}), baseline, 0.0, "b").passed


def test_generation_metrics_are_gated_when_both_runs_have_them() -> None:
    def ask(answer: str):  # type: ignore[no-untyped-def]
        return lambda q: (answer, [{"uri": "file:///kb/a.md"}])

    items = [QAItem("q", "a.md", ("seven days",))]

    def search(q: str, n: int) -> list[dict]:
        return [{"uri": "file:///kb/a.md"}]

    good = evaluate(items, search, 5, ask=ask("Within seven days."))
    bad = evaluate(items, search, 5, ask=ask("I don't know."))
    gate = compare(bad, good.as_dict(), 0.02, "b")
    assert [d.metric for d in gate.drops] == ["generation.answer_contains"]
    assert compare(bad, {**good.as_dict(), "generation": None}, 0.02, "b").passed


def test_a_baseline_of_another_k_or_set_is_refused(tmp_path: Path) -> None:
    baseline = run({"a.md": 1, "b.md": 1, "c.md": 1}).as_dict()
    with pytest.raises(InvalidRequest, match="k=3"):
        compare(run({"a.md": 1, "b.md": 1, "c.md": 1}, k=3), baseline, 0.02, "b")
    with pytest.raises(InvalidRequest, match="questions"):
        compare(run({"a.md": 1, "b.md": 1, "c.md": 1}), {**baseline, "questions": 4}, 0.02, "b")
    with pytest.raises(InvalidRequest, match="no retrieval metrics"):
        compare(run({"a.md": 1, "b.md": 1, "c.md": 1}), {"k": 5}, 0.02, "b")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(InvalidRequest, match="not an eval report"):
        load_baseline(tmp_path / "bad.json")
    with pytest.raises(InvalidRequest, match="cannot read baseline"):
        load_baseline(tmp_path / "missing.json")


def test_inline_items_are_checked_like_file_lines() -> None:
    assert parse_qa([{"question": "q", "doc": "d", "answer_any": ["x"]}]) == [QAItem("q", "d", ("x",))]
    with pytest.raises(InvalidRequest, match="items:2: missing field 'doc'"):
        parse_qa([{"question": "q", "doc": "d"}, {"question": "q"}])
    with pytest.raises(InvalidRequest, match="items:1: each item must be an object"):
        parse_qa(["q"])
    with pytest.raises(InvalidRequest, match="holds no questions"):
        parse_qa([])


@pytest.mark.parametrize(("name", "qa"), [("kb", "kb/qa.jsonl"), ("zh", "kb_zh/qa.jsonl")])
def test_the_committed_baselines_match_their_sets(name: str, qa: str) -> None:
    """A set that gains questions needs a new baseline (`make eval-baseline`), else the gate of
    `make test` refuses to compare."""
    baseline = json.loads((BASELINES / f"{name}.json").read_text())
    questions = [it.question for it in load_qa(FIXTURES / qa)]
    assert (baseline["set"], baseline["k"], baseline["mode"]) == (name, 5, "hybrid")
    assert baseline["generation"] is None  # the gate judges retrieval only
    assert [it["question"] for it in baseline["items"]] == questions
    assert baseline["retrieval"]["hit@k"] >= 0.95


def test_tune_keeps_the_best_mrr_and_prefers_the_current_weight_on_ties() -> None:
    from appliance.evaluation import tune, tune_text

    # "where is b" finds b.md first once BM25 weighs at least 1, second below that.
    def search_at(weight: float):  # type: ignore[no-untyped-def]
        def search(question: str, n: int) -> list[dict]:
            doc = question.rsplit(" ", 1)[-1] + ".md"
            found = [{"uri": f"file:///kb/{doc}"}]
            if doc == "b.md" and weight < 1:
                found.insert(0, {"uri": "file:///kb/other.md"})
            return found

        return search

    data = tune(ITEMS, search_at, 5, current=1.5, weights=(0.5, 1.0, 1.5, 2.0))
    assert [row["bm25_weight"] for row in data["grid"]] == [0.5, 1.0, 1.5, 2.0]
    assert (data["grid"][0]["mrr"], data["grid"][1]["mrr"]) == (0.8333, 1.0)
    assert data["best"]["bm25_weight"] == 1.5  # 1.0, 1.5 and 2.0 tie: no change for nothing
    assert "best bm25_weight 1.5 (now 1.5)" in tune_text({**data, "collection": "kb"})
    applied = tune_text({**data, "collection": "kb", "applied": True})
    assert "collection 'kb' now searches with bm25_weight 1.5" in applied
