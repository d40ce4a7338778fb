"""Retrieval quality and the search surface on the labelled set (tests/fixtures/kb), end to end:
real parsing, real chunking, the real ONNX embedder and the Edge shard.

Measured on this set (39 questions, 18 documents, k=5): dense hit@1 0.90, BM25 0.97, hybrid 0.90 (torch fp32 embeddings),
hit@5 1.00 for all three. The thresholds below sit a few questions under that, so a regression
in tokenisation, fusion or filtering fails them while embedder noise does not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import connectors
from appliance.domain import LOCAL_ADMIN, Principal
from appliance.evaluation import evaluate, load_qa
from appliance.rag.pipeline import citation_dicts
from tests.conftest import base_env, run_cli

pytestmark = pytest.mark.slow

KB = Path(__file__).resolve().parents[1] / "fixtures" / "kb"
LEGAL = "# Legal hold notice\n\nThe Zephyr litigation hold covers all mailboxes of the sales team.\n"


def _container(data_dir: Path):  # type: ignore[no-untyped-def]
    from appliance.container import Container
    from appliance.settings import load_settings

    return Container(load_settings(data_dir=data_dir, log_level="WARNING"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The labelled set for everyone, plus one document only group:legal may read."""
    root = tmp_path_factory.mktemp("kbeval")
    (root / "legal").mkdir()
    (root / "legal" / "legal_hold.md").write_text(LEGAL)
    container = _container(root / "data")
    try:
        ext = container.settings.ingestion.extensions
        report = container.jobs.run([connectors.for_source(str(KB), extensions=ext)], "kb", [], "t")
        assert report["failed"] == [] and report["added"] == 18
        report = container.jobs.run(
            [connectors.for_source(str(root / "legal"), extensions=ext)],
            "kb",
            ["group:legal"],
            "t",
        )
        assert report["added"] == 1
    finally:
        container.close()
    return root / "data"


def test_eval_command_reports_retrieval_metrics(data_dir: Path) -> None:
    env = base_env(data_dir)
    result = run_cli(["eval", str(KB / "qa.jsonl"), "-c", "kb", "--no-generate", "--json"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert (report["questions"], report["k"], report["mode"], report["generation"]) == (39, 5, "hybrid", None)
    assert report["retrieval"]["hit@k"] >= 0.95
    assert report["retrieval"]["hit@1"] >= 0.85
    assert len(report["items"]) == 39 and all("rank" in it for it in report["items"])
    bad = run_cli(["eval", str(KB / "missing.jsonl"), "--json"], env)
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    # Without --out the dated result file lands in the data dir.
    assert Path(report["result_file"]) == data_dir / "eval" / f"{report['date']}-kb.json"
    assert json.loads(Path(report["result_file"]).read_text())["retrieval"] == report["retrieval"]


def test_eval_gate_exits_3_when_a_metric_drops_below_the_baseline(data_dir: Path, tmp_path: Path) -> None:
    env = base_env(data_dir)
    args = ["eval", str(KB / "qa.jsonl"), "-c", "kb", "--no-generate", "--json", "--out", str(tmp_path)]
    first = run_cli(args, env)
    assert first.returncode == 0, first.stderr[-3000:]
    measured = json.loads(first.stdout)
    result_file = tmp_path / f"{measured['date']}-kb.json"
    assert Path(measured["result_file"]) == result_file and "gate" not in measured
    same = run_cli([*args, "--baseline", str(result_file)], env)
    assert same.returncode == 0, same.stderr[-3000:]
    assert json.loads(same.stdout)["gate"]["passed"] is True
    # A baseline better than this run by more than the margin: the gate fails with exit code 3.
    higher = json.loads(result_file.read_text())
    higher["retrieval"]["mrr"] = min(1.0, measured["retrieval"]["mrr"]) + 0.05
    (tmp_path / "higher.json").write_text(json.dumps(higher))
    failed = run_cli([*args, "--baseline", str(tmp_path / "higher.json"), "--max-drop", "0.02"], env)
    assert failed.returncode == 3, failed.stderr[-3000:]
    gate = json.loads(failed.stdout)["gate"]
    assert gate["passed"] is False and [d["metric"] for d in gate["drops"]] == ["retrieval.mrr"]
    assert json.loads(result_file.read_text())["gate"]["passed"] is False  # the verdict is kept
    looser = run_cli([*args, "--baseline", str(tmp_path / "higher.json"), "--max-drop", "0.06"], env)
    assert looser.returncode == 0, looser.stderr[-3000:]
    other_k = run_cli([*args, "--k", "3", "--baseline", str(result_file)], env)
    assert other_k.returncode == 1 and "k=5, this run has k=3" in other_k.stderr


def test_eval_tune_reports_hybrid_at_each_bm25_weight(data_dir: Path) -> None:
    env = base_env(data_dir)
    result = run_cli(["eval", str(KB / "qa.jsonl"), "-c", "kb", "--tune", "--json"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)
    weights = [row["bm25_weight"] for row in data["grid"]]
    assert weights[0] == 0.0 and 1.25 in weights and data["current_bm25_weight"] == 1.25
    assert data["best"]["mrr"] == max(row["mrr"] for row in data["grid"])
    assert data["best"]["mrr"] >= next(r["mrr"] for r in data["grid"] if r["bm25_weight"] == 1.25)
    assert "applied" not in data

    applied = run_cli(["eval", str(KB / "qa.jsonl"), "-c", "kb", "--tune", "--apply", "--json"], env)
    assert applied.returncode == 0, applied.stderr[-3000:]
    best = json.loads(applied.stdout)["best"]["bm25_weight"]
    assert json.loads(applied.stdout)["applied"] is True
    container = _container(data_dir)
    try:
        assert container.collections.get("kb")["bm25_weight"] == best
        assert container.retriever.fusion_for("kb").bm25_weight == best
        assert container.retriever.fusion_for("other").bm25_weight == 1.25  # the setting
        container.collections.update("kb", bm25_weight=None)  # the module's other tests use 1.25
        assert container.retriever.fusion_for("kb").bm25_weight == 1.25
    finally:
        container.close()
    assert run_cli(["eval", str(KB / "qa.jsonl"), "--apply"], env).returncode == 2


def test_search_command_takes_filters(data_dir: Path) -> None:
    env = base_env(data_dir)
    vpn = KB / "it_vpn_guide.html"
    args = ["search", "how many days of annual leave", "-c", "kb", "--uri", str(vpn), "--json"]
    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    citations = json.loads(result.stdout)["citations"]
    assert citations and {c["uri"] for c in citations} == {vpn.resolve().as_uri()}
    bad = run_cli(["search", "x", "--after", "not-a-date"], env)
    assert bad.returncode == 2 and "invalid filter" in bad.stderr


@pytest.fixture(scope="module")
def container(data_dir: Path) -> Iterator:  # type: ignore[no-untyped-def]
    c = _container(data_dir)
    yield c
    c.close()


def _eval(container, mode: str, items=None):  # type: ignore[no-untyped-def]
    items = items or load_qa(KB / "qa.jsonl")

    def search(q: str, k: int) -> list[dict]:
        return citation_dicts(container.retriever.search(q, LOCAL_ADMIN, "kb", k, None, mode)[0])

    return evaluate(items, search, 5, mode=mode)


def test_ablation_hybrid_is_at_least_as_good_as_dense(container) -> None:  # type: ignore[no-untyped-def]
    reports = {mode: _eval(container, mode) for mode in ("dense", "bm25", "hybrid")}
    hybrid = reports["hybrid"].retrieval
    assert hybrid["hit@k"] >= 0.95 and hybrid["hit@1"] >= 0.85 and hybrid["mrr"] >= 0.9
    assert hybrid["mrr"] >= reports["dense"].retrieval["mrr"]
    assert reports["bm25"].retrieval["hit@k"] >= 0.9


def test_chinese_and_mixed_questions_find_their_documents(container) -> None:  # type: ignore[no-untyped-def]
    items = [it for it in load_qa(KB / "qa.jsonl") if it.doc.startswith(("zh_", "mixed_"))]
    assert len(items) >= 10
    report = _eval(container, "hybrid", items)
    assert report.retrieval["hit@k"] == 1.0
    assert report.retrieval["hit@1"] >= 0.8
    hits, _ = container.retriever.search("调休须在多长时间内使用", LOCAL_ADMIN, "kb", 1)
    assert hits[0].chunk.uri.endswith("zh_attendance_policy.md") and "三个月" in hits[0].chunk.text
    hits, _ = container.retriever.search("一线城市 hotel 住宿标准 600", LOCAL_ADMIN, "kb", 1)
    assert hits[0].chunk.uri.endswith("mixed_expense_system.md")


def test_results_are_capped_per_document(container) -> None:  # type: ignore[no-untyped-def]
    hits, _ = container.retriever.search("leave policy days sick parental annual", LOCAL_ADMIN, "kb", 5)
    per_doc: dict[str, int] = {}
    for h in hits:
        per_doc[h.chunk.document_id] = per_doc.get(h.chunk.document_id, 0) + 1
    assert len(hits) == 5 and max(per_doc.values()) <= container.settings.retrieval.max_per_document


# -- the REST search: filters narrow, access rules hold -----------------------------------------------


@pytest.fixture(scope="module")
def api(container) -> Iterator[tuple[TestClient, dict[str, str]]]:  # type: ignore[no-untyped-def]
    from appliance.api.app import create_app

    keys = {
        "admin": container.keys.add_ephemeral(LOCAL_ADMIN),
        "eve": container.keys.add_ephemeral(Principal("eve", "employee", ("sales",))),
        "lena": container.keys.add_ephemeral(Principal("lena", "employee", ("legal",))),
    }
    # No lifespan: the search route needs the embedder and the store only, not the chat model.
    yield TestClient(create_app(container)), keys


def _search(api, who: str, **body) -> list[dict]:  # type: ignore[no-untyped-def]
    client, keys = api
    r = client.post(
        "/api/v1/search",
        json={"collection": "kb", "k": 5, **body},
        headers={"Authorization": f"Bearer {keys[who]}"},
    )
    assert r.status_code == 200, r.text
    return r.json()["citations"]


def test_api_search_hides_documents_a_user_may_not_read(api) -> None:  # type: ignore[no-untyped-def]
    query = "Zephyr litigation hold mailboxes"
    assert _search(api, "lena", query=query)[0]["uri"].endswith("legal_hold.md")
    assert _search(api, "admin", query=query)[0]["uri"].endswith("legal_hold.md")
    assert not any(c["uri"].endswith("legal_hold.md") for c in _search(api, "eve", query=query))
    # Naming the document in a filter does not open it up: a filter only narrows.
    legal_uri = (_search(api, "admin", query=query)[0])["uri"]
    assert _search(api, "eve", query=query, filters={"uris": [legal_uri]}) == []


def test_api_search_filters_by_uri_source_date_and_mode(api) -> None:  # type: ignore[no-untyped-def]
    vpn = (KB / "it_vpn_guide.html").resolve().as_uri()
    hits = _search(api, "eve", query="how long is parental leave", filters={"uris": [vpn]})
    assert hits and {c["uri"] for c in hits} == {vpn}
    hits = _search(api, "admin", query="litigation", filters={"sources": [KB.resolve().as_uri()]})
    assert hits and not any(c["uri"].endswith("legal_hold.md") for c in hits)
    assert _search(api, "admin", query="leave", filters={"modified_after": "2999-01-01T00:00:00Z"}) == []
    assert _search(api, "admin", query="leave", filters={"modified_before": "2999-01-01"})
    bm25_only = _search(api, "admin", query="GlobalProtect", mode="bm25", k=1)
    assert bm25_only[0]["uri"] == vpn


def test_a_collections_own_bm25_weight_is_set_by_admins_and_used_by_search(api) -> None:  # type: ignore[no-untyped-def]
    client, keys = api
    query = "I typed my password into a fake login page. Who should I call?"
    dense = [c["chunk_id"] for c in _search(api, "admin", query=query, mode="dense")]
    hybrid = [c["chunk_id"] for c in _search(api, "admin", query=query)]
    assert hybrid != dense  # BM25 at 1.25 moves this one: a weight of 0 must show

    def patch(who: str, body: dict[str, Any]) -> Any:
        headers = {"Authorization": f"Bearer {keys[who]}"}
        return client.patch("/api/v1/collections/kb", json=body, headers=headers)

    assert patch("eve", {"bm25_weight": 0}).status_code == 403
    assert patch("admin", {"bm25_weight": -1}).status_code == 422
    try:
        r = patch("admin", {"bm25_weight": 0})
        assert r.status_code == 200 and r.json()["bm25_weight"] == 0
        assert [c["chunk_id"] for c in _search(api, "admin", query=query)] == dense
        assert patch("admin", {"description": "unchanged weight"}).json()["bm25_weight"] == 0
    finally:
        r = patch("admin", {"bm25_weight": None})
    assert r.status_code == 200 and r.json()["bm25_weight"] is None
    assert [c["chunk_id"] for c in _search(api, "admin", query=query)] == hybrid


def test_api_search_rejects_bad_filters_with_json_errors(api) -> None:  # type: ignore[no-untyped-def]
    client, keys = api
    headers = {"Authorization": f"Bearer {keys['eve']}"}
    for body in (
        {"query": "x", "filters": {"acl": ["*"]}},  # no such field: a client cannot speak about ACLs
        {"query": "x", "filters": {"modified_after": "yesterday-ish"}},
        {"query": "x", "mode": "fuzzy"},
    ):
        r = client.post("/api/v1/search", json=body, headers=headers)
        assert r.status_code == 422, (body, r.text)
        assert set(r.json()["error"]) >= {"code", "message"}


def test_api_eval_runs_the_gate_for_admins_only(api, container) -> None:  # type: ignore[no-untyped-def]
    client, keys = api
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    items = [json.loads(line) for line in (KB / "qa.jsonl").read_text().splitlines() if line][:10]
    body = {"items": items, "collection": "kb", "name": "kb-head"}
    denied = client.post("/api/v1/eval", json=body, headers={"Authorization": f"Bearer {keys['eve']}"})
    assert denied.status_code == 403
    r = client.post("/api/v1/eval", json=body, headers=admin)
    assert r.status_code == 200, r.text
    first = r.json()
    assert (first["questions"], first["set"], first["generation"], first["gate"]) == (
        10,
        "kb-head",
        None,
        None,
    )
    assert first["retrieval"]["hit@k"] >= 0.9
    eval_dir = container.settings.data_dir / "eval"
    assert Path(first["result_file"]) == eval_dir / f"{first['date']}-kb-head.json"
    # Gated on a baseline better by more than the margin: still 200, the verdict is in the body.
    better = {**first, "retrieval": {**first["retrieval"], "mrr": first["retrieval"]["mrr"] + 0.1}}
    r = client.post("/api/v1/eval", json={**body, "baseline": better, "max_drop": 0.05}, headers=admin)
    assert r.status_code == 200, r.text
    gate = r.json()["gate"]
    assert gate["passed"] is False and [d["metric"] for d in gate["drops"]] == ["retrieval.mrr"]
    r = client.post("/api/v1/eval", json={**body, "baseline": first}, headers=admin)
    assert r.json()["gate"]["passed"] is True
    # With answers judged (extractive, the default model's mode): scores per answer, same file.
    r = client.post("/api/v1/eval", json={**body, "items": items[:4], "generate": True}, headers=admin)
    assert r.status_code == 200, r.text
    judged = r.json()["generation"]
    assert judged is not None and 0.5 <= judged["answer_contains"] <= 1.0, judged
    assert 0.5 <= judged["citation_correct"] <= 1.0, judged
    saved = json.loads(Path(r.json()["result_file"]).read_text())
    assert saved["generation"] == judged
    # A set by name, from <data dir>/eval/sets/.
    (eval_dir / "sets").mkdir(parents=True, exist_ok=True)
    (eval_dir / "sets" / "kb.jsonl").write_text((KB / "qa.jsonl").read_text())
    r = client.post("/api/v1/eval", json={"set": "kb", "collection": "kb", "mode": "bm25"}, headers=admin)
    assert r.status_code == 200, r.text
    assert (r.json()["questions"], r.json()["set"], r.json()["mode"]) == (39, "kb", "bm25")
    assert client.post("/api/v1/eval", json={"set": "nope"}, headers=admin).status_code == 404
    for bad in ({"set": "kb", "items": items}, {}, {"set": "../secrets"}, {"items": [{"question": "q"}]}):
        assert client.post("/api/v1/eval", json=bad, headers=admin).status_code == 422, bad


def test_rerank_stage_orders_by_cross_encoder_scores(container) -> None:  # type: ignore[no-untyped-def]
    # No trained cross-encoder ships offline; the MiniLM weights with an untrained head are a real
    # CrossEncoder whose scores, while meaningless, are what the stage must sort by.
    from appliance.embeddings.rerank import CrossEncoderReranker
    from appliance.retrieval import Retriever
    from appliance.vectorstore.hybrid import FusionConfig

    reranker = CrossEncoderReranker(container.embedder.path, threads=1)
    try:
        plain = Retriever(container.embedder, container.store)
        reranked = Retriever(
            container.embedder, container.store, reranker, 8, FusionConfig(max_per_document=1)
        )
        query = "How do I report a suspicious email?"
        candidates, _ = plain.search(query, LOCAL_ADMIN, "kb", 8)
        hits, _ = reranked.search(query, LOCAL_ADMIN, "kb", 3)
        scores = dict(
            zip(
                [c.chunk.id for c in candidates],
                reranker.scores(query, [c.chunk.text for c in candidates]),
                strict=True,
            )
        )
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert all(h.chunk.id in scores and abs(h.score - float(scores[h.chunk.id])) < 1e-4 for h in hits)
        assert len({h.chunk.document_id for h in hits}) == len(hits)  # the cap holds after reranking
        best = max(scores, key=lambda i: float(scores[i]))
        assert hits[0].chunk.id == best
    finally:
        reranker.close()


def test_a_question_embeds_its_query_once_and_asks_the_store_once(container, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Spies around the real embedder and store: retrieval, relevance and the evidence sentences
    # share one query vector, and the hits come with their vectors from the one search.
    calls = {"embed_query": 0, "search": 0, "get_with_vectors": 0}
    for obj, name in (
        (container.embedder, "embed_query"),
        (container.store, "search"),
        (container.store, "get_with_vectors"),
    ):

        def spy(*args, _real=getattr(obj, name), _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(obj, name, spy)
    result = asyncio.run(
        container.rag.ask(
            "How do I report a suspicious email?", LOCAL_ADMIN, collection="kb", mode="extractive"
        )
    )
    assert result.citations and result.answer
    assert calls == {"embed_query": 1, "search": 1, "get_with_vectors": 0}
