"""The official `openai` SDK against a running `appliance serve` on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server, base_env, cli_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(server: Server, corpus_dir: Path) -> Server:
    # The CLI sees the running server owns the data dir and ingests through its API.
    env = base_env(Path(server.env["APPLIANCE_DATA_DIR"]))
    report = cli_json(["ingest", str(corpus_dir)], env)
    assert report["added"] == 5 and report["failed"] == []
    return server


def client(server: Server, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key or server.admin_key, max_retries=0)


def test_health_is_public_and_the_api_is_not(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    response = httpx.post(
        f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    with pytest.raises(openai.AuthenticationError):
        client(server, "kb-wrong").models.list()


def test_models_lists_the_served_model(loaded: Server) -> None:
    ids = [m.id for m in client(loaded).models.list()]
    assert "smollm2-135m-instruct" in ids and "default" in ids


def test_chat_non_streaming_has_citations_and_usage(loaded: Server) -> None:
    response = client(loaded).chat.completions.create(
        model="smollm2-135m-instruct",
        messages=[{"role": "user", "content": "Who must approve travel expenses above 500 euros?"}],
        extra_body={"answer_mode": "grounded"},  # the model generates: usage is counted
    )
    assert response.choices[0].message.content.strip()
    citations = response.model_extra["citations"]
    assert citations[0]["uri"].endswith("/expenses.docx")
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_chat_streaming_delivers_deltas_then_citations(loaded: Server) -> None:
    stream = client(loaded).chat.completions.create(
        model="default",  # a knowledge base may be named as the model
        messages=[{"role": "user", "content": "What is the warranty period of the X-200 turbine?"}],
        stream=True,
    )
    text = ""
    citations = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if (chunk.model_extra or {}).get("citations"):
            citations = chunk.model_extra["citations"]
    assert chunks > 2 and text.strip()
    assert citations and citations[0]["uri"].endswith("/warranty.pdf")


def test_bad_request_is_a_json_error(loaded: Server) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client(loaded).chat.completions.create(
            model="no-such-model", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.status_code == 400
    response = httpx.post(
        f"{loaded.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {loaded.admin_key}"},
        json={"messages": []},
    )
    assert response.status_code == 422 and "error" in response.json()


def test_ui_is_served_behind_a_login(loaded: Server) -> None:
    page = httpx.get(f"{loaded.url}/", follow_redirects=True)
    assert page.status_code == 200 and "<html" in page.text.lower()
    config = httpx.get(f"{loaded.url}/config")
    assert config.status_code in (200, 401)
    if config.status_code == 200:
        assert config.json().get("auth_required") is True
