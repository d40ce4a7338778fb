"""Ingest -> ask -> cited answer through the real CLI, the real models and the real shard,
inside a network namespace with no route out (zero egress)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import base_env, cli_json, run_cli
from tests.fixtures.corpus import QUESTIONS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> dict:
    data_dir = tmp_path_factory.mktemp("kb") / "data"
    # The generation path (usage, time to first token from the model) is what this checks.
    env = base_env(data_dir, APPLIANCE_RAG__ANSWER_MODE="grounded")
    report = cli_json(["ingest", str(corpus_dir)], env, offline=True)
    return {"env": env, "data_dir": data_dir, "report": report}


def test_ingest_indexes_every_format_offline(kb: dict) -> None:
    report = kb["report"]
    assert report["failed"] == []
    assert report["added"] == 5
    assert report["chunks"] >= 5


@pytest.mark.parametrize(("question", "doc", "answers"), QUESTIONS)
def test_ask_cites_the_right_document_offline(kb: dict, question: str, doc: str, answers: list[str]) -> None:
    result = cli_json(["ask", question], kb["env"], offline=True)
    assert result["answer"].strip(), "empty answer"
    assert result["citations"], "no citations"
    assert result["citations"][0]["uri"].endswith("/" + doc), [c["uri"] for c in result["citations"]]
    assert result["model"] == "smollm2-135m-instruct"
    assert result["usage"]["prompt_tokens"] > 0 and result["usage"]["completion_tokens"] > 0
    assert result["timings"]["ttft_ms"] > 0 and result["timings"]["retrieval_ms"] > 0

    # Every citation points at a chunk that is really stored, with the text we were shown.
    from appliance.container import Container
    from appliance.settings import load_settings

    container = Container(load_settings(data_dir=kb["data_dir"]))
    try:
        stored = {
            c.id: c for c in container.store.get("default", [c["chunk_id"] for c in result["citations"]])
        }
    finally:
        container.close()
    for citation in result["citations"]:
        assert citation["chunk_id"] in stored
        assert stored[citation["chunk_id"]].text == citation["text"]


def test_reingest_adds_nothing(kb: dict, corpus_dir: Path) -> None:
    report = cli_json(["ingest", str(corpus_dir)], kb["env"])
    assert (report["added"], report["updated"], report["chunks"], report["unchanged"]) == (0, 0, 0, 5)


def test_search_returns_citations(kb: dict) -> None:
    result = cli_json(["search", "emergency assembly point", "--k", "2"], kb["env"])
    assert len(result["citations"]) == 2
    assert result["citations"][0]["uri"].endswith("/safety.html")


def test_bad_files_fail_alone(tmp_path: Path, corpus_dir: Path) -> None:
    src = tmp_path / "mixed"
    shutil.copytree(corpus_dir, src)
    (src / "random.pdf").write_bytes(bytes(range(256)) * 40)
    (src / "empty.md").write_bytes(b"")
    env = base_env(tmp_path / "data")
    report = cli_json(["ingest", str(src)], env)
    failed = {Path(f["uri"]).name: f["error"] for f in report["failed"]}
    assert set(failed) == {"random.pdf", "empty.md"}
    assert all(reason.strip() for reason in failed.values())
    assert report["added"] == 5


def test_audit_chain_verifies_and_detects_a_changed_byte(kb: dict) -> None:
    ok = run_cli(["audit", "verify", "--json"], kb["env"])
    assert ok.returncode == 0, ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["ok"] and verdict["records"] >= len(QUESTIONS)

    log = kb["data_dir"] / "audit" / "audit.jsonl"
    data = bytearray(log.read_bytes())
    first_line_end = data.index(b"\n")
    actor = data.index(b'"actor":"', first_line_end) + len(b'"actor":"')  # in the second record
    data[actor] = ord("X") if data[actor] != ord("X") else ord("Y")
    log.write_bytes(bytes(data))
    bad = run_cli(["audit", "verify", "--json"], kb["env"])
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["first_bad_line"] == 2
