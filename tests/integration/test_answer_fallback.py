"""A small model's generated answer is shown only when the sources back it (issue 17 leftovers,
item 4): with the packaged SmolLM2-135M, on the real embedder, shard, pipeline and llama.cpp, an
invented figure or a drifted answer gives way to the extractive quotes with the notice, with the
same citations; with the check off, the model's own text comes through."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.container import Container
from appliance.domain import LOCAL_ADMIN
from appliance.rag.answering import FALLBACK_NOTICE
from appliance.settings import load_settings

pytestmark = pytest.mark.slow

KB = Path(__file__).resolve().parents[1] / "fixtures" / "kb"
# Greedy decoding: the 135M model answers these the same way every run. It invents a password
# ("12345678") where the manual says the password is on the label, and answers the annual leave's
# "25 days" for parental leave (16 weeks): words the sources contain, the wrong figure.
PASSWORD = "What is the default admin password of the X200 router?"
PARENTAL = "How long is parental leave?"


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    root = tmp_path_factory.mktemp("fallback")
    docs = root / "docs"
    docs.mkdir()
    for name in ("hr_leave_policy.md", "it_vpn_guide.html", "product_router_x200_manual.md"):
        shutil.copy(KB / name, docs / name)
    c = Container(load_settings(data_dir=root / "data", log_level="WARNING"))
    job = c.jobs.start_job(LOCAL_ADMIN, [str(docs)], "default", [], {})
    assert c.jobs.manager.wait(job.id, timeout=600)["status"] == "succeeded"
    yield c
    c.close()


@pytest.mark.parametrize("mode", ["abstractive", "grounded"])
@pytest.mark.parametrize(
    ("question", "quoted"),
    [(PASSWORD, "printed on the label"), (PARENTAL, "16 weeks")],
)
def test_a_drifting_small_model_answer_falls_back_to_the_quotes(
    container: Container, mode: str, question: str, quoted: str
) -> None:
    assert container.rag._checks("smollm2-135m-instruct")  # under 1B: auto would quote
    result = asyncio.run(container.rag.ask(question, LOCAL_ADMIN, mode=mode))
    extractive = asyncio.run(container.rag.ask(question, LOCAL_ADMIN, mode="extractive"))
    assert result.fallback and result.mode == mode
    assert result.answer.startswith(FALLBACK_NOTICE.strip()), result.answer
    assert quoted in result.answer and "[1]" in result.answer
    assert "12345678" not in result.answer and "25 days" not in result.answer
    assert result.answer.removeprefix(FALLBACK_NOTICE.strip()).strip() == extractive.answer
    assert [c["chunk_id"] for c in result.citations if c["cited"]] == [
        c["chunk_id"] for c in extractive.citations if c["cited"]
    ]


def test_with_the_check_off_the_model_answer_is_shown(container: Container) -> None:
    rag = container.rag
    unchecked = replace(rag.options, min_answer_support=0.0)
    rag.options, saved = unchecked, rag.options
    try:
        result = asyncio.run(rag.ask(PASSWORD, LOCAL_ADMIN, mode="abstractive"))
    finally:
        rag.options = saved
    assert not result.fallback and not result.answer.startswith(FALLBACK_NOTICE.strip())
    assert result.support is not None and result.support < 0.5  # what the check would have caught


def test_a_streamed_abstractive_answer_keeps_its_tokens_and_ends_with_the_fallback(
    container: Container,
) -> None:
    """Abstractive streams the model's tokens as they come (what Stop needs); the answer the
    ``done`` event carries, and that is recorded, is the checked one."""

    async def events() -> list[dict]:  # type: ignore[type-arg]
        return [e async for e in container.rag.ask_stream(PASSWORD, LOCAL_ADMIN, mode="abstractive")]

    got = asyncio.run(events())
    deltas = [e["content"] for e in got if e["type"] == "delta"]
    result = got[-1]["result"]
    assert len(deltas) > 3 and not "".join(deltas).startswith(FALLBACK_NOTICE.strip())
    assert result.fallback and result.answer.startswith(FALLBACK_NOTICE.strip())
    assert "printed on the label" in result.answer
