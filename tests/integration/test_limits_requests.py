"""Request bounds on a real server (uvicorn on loopback, the real app and metadata DB): no body
byte is read before the caller is authenticated, chunked bodies are cut off while they stream,
and /v1/embeddings and chat inputs are bounded and metered. The probes send raw chunked bodies
that never end (bench/probes.py), as an attacker would."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import uvicorn

from appliance.api.app import create_app
from appliance.api.routers.embeddings import MAX_INPUT_CHARS
from appliance.api.schemas.openai import MAX_MESSAGE_CHARS
from appliance.container import Container
from appliance.security.auth import issue_key
from appliance.settings import load_settings
from bench.probes import endless_chunked
from tests.conftest import free_port

MIB = 2**20


def _temp_bytes(folder: Path) -> int:
    """Bytes held in files under ``folder``, including unlinked ones this process keeps open
    (a spooled upload lives in an anonymous temp file)."""
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(folder)):
                total += os.stat(f"/proc/self/fd/{fd}").st_size
        except OSError:
            continue
    return total


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bounds")
    spool = tmp / "spool"
    spool.mkdir()
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = str(spool)  # where Starlette spools multipart files
    settings = load_settings(
        data_dir=tmp / "data",
        log_level="WARNING",
        ingestion={"max_file_mb": 2},
        server={"max_json_mb": 1},
    )
    container = Container(settings)
    port = free_port()
    # The lifespan would load the chat model; nothing here needs it (the embedder starts on use).
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(container), host="127.0.0.1", port=port, lifespan="off", log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    ids = container.identity
    ids.add_user("erin", "employee")
    keys = {
        "admin": container.keys.bootstrap_admin().key,  # type: ignore[union-attr]
        "erin": issue_key(container.keys, ids, "erin").key,
    }
    try:
        yield {"port": port, "url": f"http://127.0.0.1:{port}", "keys": keys, "spool": spool, "c": container}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        container.close()
        tempfile.tempdir = saved_tempdir


def _auth(live: dict[str, Any], user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {live['keys'][user]}"}


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/documents", "multipart/form-data; boundary=xyz"),
        ("/v1/chat/completions", "application/json"),
        ("/v1/embeddings", "application/json"),
        ("/api/v1/search", "application/json"),
    ],
)
def test_an_endless_body_without_a_key_is_refused_before_it_is_read(
    live: dict[str, Any], path: str, content_type: str
) -> None:
    rss = psutil.Process().memory_info().rss
    got = endless_chunked("127.0.0.1", live["port"], path, {"Content-Type": content_type}, max_bytes=48 * MIB)
    assert got.status == 401, got
    assert b"unauthenticated" in got.body
    # Nothing was buffered or spooled for it: memory and the temp folder stay flat.
    assert psutil.Process().memory_info().rss - rss < 16 * MIB
    assert _temp_bytes(live["spool"]) == 0


def test_an_endless_json_body_with_a_key_is_cut_off_at_the_json_cap(live: dict[str, Any]) -> None:
    rss = psutil.Process().memory_info().rss
    got = endless_chunked(
        "127.0.0.1",
        live["port"],
        "/v1/chat/completions",
        {"Content-Type": "application/json", **_auth(live, "erin")},
        max_bytes=48 * MIB,
        prefix=b'{"messages": [{"role": "user", "content": "',
    )
    assert got.status == 413, got
    assert b"payload_too_large" in got.body
    assert psutil.Process().memory_info().rss - rss < 16 * MIB


def test_an_endless_upload_with_a_key_is_cut_off_at_the_file_cap(live: dict[str, Any]) -> None:
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n'
    got = endless_chunked(
        "127.0.0.1",
        live["port"],
        "/api/v1/documents",
        {"Content-Type": "multipart/form-data; boundary=xyz", **_auth(live, "admin")},
        max_bytes=48 * MIB,
        prefix=part,
    )
    assert got.status == 413, got
    assert _temp_bytes(live["spool"]) == 0
    uploads = live["c"].settings.data_dir / "uploads"
    assert not uploads.exists() or not any(p.is_file() for p in uploads.rglob("*"))


def test_a_declared_length_over_the_cap_is_refused_unread(live: dict[str, Any]) -> None:
    body = b"{" + b" " * (2 * MIB) + b"}"
    r = httpx.post(f"{live['url']}/api/v1/search", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "server.max_json_mb" in r.json()["error"]["message"]
    # An upload's cap is the file limit, not the JSON one.
    r = httpx.post(
        f"{live['url']}/api/v1/documents",
        files={"file": ("a.md", b"# A\n\n" + b"a" * (int(1.5 * MIB)))},
        headers=_auth(live, "erin"),
    )
    assert r.status_code == 403, r.text  # past the size gate: an employee may not upload


def test_embedding_inputs_are_bounded_and_metered(live: dict[str, Any]) -> None:
    url = f"{live['url']}/v1/embeddings"
    erin = _auth(live, "erin")
    r = httpx.post(url, json={"input": "x" * (MAX_INPUT_CHARS + 1)}, headers=erin)
    assert r.status_code == 400 and str(MAX_INPUT_CHARS) in r.json()["error"]["message"]
    r = httpx.post(url, json={"input": ["a"] * 2049}, headers=erin)
    assert r.status_code == 400
    metering = live["c"].metering
    before = metering.tokens_today("user:erin")
    r = httpx.post(url, json={"input": ["turbine oil", "gearbox"]}, headers=erin, timeout=120)
    assert r.status_code == 200, r.text
    tokens = r.json()["usage"]["prompt_tokens"]
    assert tokens > 0 and metering.tokens_today("user:erin") == before + tokens


def test_chat_messages_are_bounded(live: dict[str, Any]) -> None:
    url = f"{live['url']}/v1/chat/completions"
    erin = _auth(live, "erin")
    long = {"messages": [{"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}]}
    r = httpx.post(url, json=long, headers=erin)
    assert r.status_code == 422 and str(MAX_MESSAGE_CHARS) in r.json()["error"]["message"]
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 20_000}] * 2}]}
    assert httpx.post(url, json=parts, headers=erin).status_code == 422
    many = {"messages": [{"role": "user", "content": "hi"}] * 257}
    assert httpx.post(url, json=many, headers=erin).status_code == 422
