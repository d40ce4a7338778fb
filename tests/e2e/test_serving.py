"""Serving through `appliance serve`: 429 under load (never a 5xx, streaming or not), /metrics
behind the admin key, /v1/embeddings in the OpenAI format, `doctor --json`, client disconnects."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import ROOT, Server, base_env, cli_json, free_port

pytestmark = pytest.mark.slow


class SmallQueueServer(Server):
    """One llama.cpp worker with a queue of one, so a handful of requests overload it; answers are
    generated (grounded mode) so every chat goes through the pool."""

    def __init__(self, data_dir: Path, admin_key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = admin_key
        self.env = base_env(
            data_dir,
            APPLIANCE_AUTH__ADMIN_KEY=admin_key,
            APPLIANCE_INFERENCE__MAX_QUEUE="1",
            APPLIANCE_INFERENCE__REPLICAS="1",
            # A queued request waits for its turn however slow a loaded CI host makes the one ahead:
            # only a full queue may refuse here, never the wait.
            APPLIANCE_INFERENCE__QUEUE_TIMEOUT_S="600",
            # The default answer mode is extractive (no model); these tests are about the model pool.
            APPLIANCE_RAG__ANSWER_MODE="grounded",
        )
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - lives as long as the server
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Iterator[SmallQueueServer]:
    data_dir = tmp_path_factory.mktemp("serving") / "data"
    srv = SmallQueueServer(data_dir, "kb-test-admin-serving")
    try:
        srv.wait_ready()
        # One document is enough to put the model to work; parsing the whole corpus costs time.
        report = cli_json(["ingest", str(corpus_dir / "safety.html")], base_env(data_dir))
        assert report["added"] == 1
        yield srv
    finally:
        srv.stop()


def auth(srv: Server, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or srv.admin_key}"}


def test_load_beyond_capacity_gets_429_with_retry_after_and_no_5xx(busy: SmallQueueServer) -> None:
    body = {"messages": [{"role": "user", "content": "Where is the emergency assembly point?"}]}

    def ask(_: int) -> httpx.Response:
        return httpx.post(f"{busy.url}/v1/chat/completions", json=body, headers=auth(busy), timeout=120)

    with ThreadPoolExecutor(8) as ex:
        responses = list(ex.map(ask, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 429}, [(r.status_code, r.text[:200]) for r in responses]
    assert statuses.count(429) >= 1 and statuses.count(200) >= 2, statuses
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["Retry-After"]) >= 1
            assert r.json()["error"]["code"] == "overloaded"


def test_metrics_need_the_admin_key_and_name_the_phases(busy: SmallQueueServer) -> None:
    assert httpx.get(f"{busy.url}/metrics").status_code == 401
    employee = cli_json(["keys", "create", "--user", "eve"], base_env(Path(busy.env["APPLIANCE_DATA_DIR"])))
    assert httpx.get(f"{busy.url}/metrics", headers=auth(busy, employee["key"])).status_code == 403
    r = httpx.get(f"{busy.url}/metrics", headers=auth(busy))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        "appliance_queue_wait_seconds_count",
        "appliance_time_to_first_token_seconds_count",
        "appliance_decode_tokens_per_second_count",
        "appliance_inference_errors_total",
    ):
        assert f'{name}{{model="smollm2-135m-instruct"' in text or f"{name}{{kind=" in text, name


def test_embeddings_in_the_openai_format(busy: SmallQueueServer) -> None:
    sdk = openai.OpenAI(base_url=f"{busy.url}/v1", api_key=busy.admin_key, max_retries=0)
    out = sdk.embeddings.create(model="all-minilm-l6-v2", input=["warranty period", "assembly point"])
    assert [d.index for d in out.data] == [0, 1] and out.model == "all-minilm-l6-v2"
    vectors = np.array([d.embedding for d in out.data])
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert out.usage.prompt_tokens > 4
    one = sdk.embeddings.create(model="all-minilm-l6-v2", input="warranty period")
    # Same text, same vector up to batching noise (padding in a batch changes the last digits).
    assert float(np.dot(one.data[0].embedding, vectors[0])) > 0.99
    r = httpx.post(f"{busy.url}/v1/embeddings", json={"input": [], "model": "x"}, headers=auth(busy))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = httpx.post(f"{busy.url}/v1/embeddings", json={"input": []}, headers=auth(busy))
    assert r.status_code == 400
    assert httpx.post(f"{busy.url}/v1/embeddings", json={"input": "x"}).status_code == 401


def test_doctor_reports_probes_placement_models_and_egress(tmp_path: Path) -> None:
    report = cli_json(["doctor"], base_env(tmp_path / "data"))
    assert report["ok"] is True
    assert [p["platform"] for p in report["accelerators"]] == ["cuda", "rocm", "ascend", "mps", "cpu"]
    assert all(p["reason"] for p in report["accelerators"])
    (placement,) = report["placement"]
    assert placement["model"] == "smollm2-135m-instruct" and placement["backend"] == "llamacpp"
    assert placement["fits"] and placement["reason"]
    llm = report["models"]["llm:smollm2-135m-instruct"]
    assert llm["format"] == "gguf" and llm["quantization"] == "Q4_1" and llm["path"].endswith(".gguf")
    assert report["egress"]["guard"] is True and report["egress"]["could_reach_network"] is False


def _metric(text: str, series: str) -> float:
    """The value of one exact series (name and labels) in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_client_disconnect_mid_stream_stops_generation_and_frees_the_slot(busy: SmallQueueServer) -> None:
    def metrics() -> str:
        return httpx.get(f"{busy.url}/metrics", headers=auth(busy)).text

    cancelled = 'appliance_inference_requests_total{model="smollm2-135m-instruct",outcome="cancelled"}'
    in_flight = 'appliance_in_flight{model="smollm2-135m-instruct"}'
    before = _metric(metrics(), cancelled)
    body = {
        "messages": [{"role": "user", "content": "Describe the emergency assembly point in great detail."}],
        "stream": True,
        "max_tokens": 400,
        "answer_mode": "abstractive",  # token by token (grounded releases whole sentences)
    }
    with (
        httpx.Client(timeout=120) as client,
        client.stream("POST", f"{busy.url}/v1/chat/completions", json=body, headers=auth(busy)) as r,
    ):
        assert r.status_code == 200
        for line in r.iter_lines():
            if '"content": "' in line and '"content": ""' not in line:
                break  # a token arrived: hang up mid-answer
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline:
        text = metrics()
        if _metric(text, in_flight) == 0 and _metric(text, cancelled) == before + 1:
            return
        time.sleep(0.2)  # polling the server's metrics until the deadline
    raise AssertionError(f"slot not freed or generation not cancelled:\n{text}")


MODEL = 'model="smollm2-135m-instruct"'
IN_FLIGHT = f"appliance_in_flight{{{MODEL}}}"
QUEUED = f"appliance_queued{{{MODEL}}}"
CANCELLED = f'appliance_inference_requests_total{{{MODEL},outcome="cancelled"}}'
QUESTION = "Describe the emergency assembly point in great detail."


def _metrics(srv: SmallQueueServer) -> str:
    return httpx.get(f"{srv.url}/metrics", headers=auth(srv), timeout=30).text


def _poll(srv: SmallQueueServer, check: Any, what: str, deadline_s: float = 60) -> None:
    end = time.monotonic() + deadline_s
    text = ""
    while time.monotonic() < end:
        text = _metrics(srv)
        if check(text):
            return
        time.sleep(0.05)  # polling the server's metrics until the deadline
    raise AssertionError(f"{what} not reached before the deadline:\n{text}")


def _worker_pid(srv: SmallQueueServer) -> int:
    """The server's llama.cpp worker process (a child of the server)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == srv.proc.pid and b"llamacpp_worker" in cmdline:
            return int(entry.name)
    raise AssertionError("the server has no llama.cpp worker")


@contextlib.contextmanager
def _worker_paused(srv: SmallQueueServer) -> Iterator[None]:
    """Freeze the worker (SIGSTOP), so an answer in progress holds its slot however briefly the
    model would have answered; resumed (SIGCONT) on the way out. Keep it to a few seconds: the
    server's health checker restarts a worker that misses three probes in a row."""
    pid = _worker_pid(srv)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):  # already replaced by the health checker
            os.kill(pid, signal.SIGCONT)


def _wait_idle(srv: SmallQueueServer) -> None:
    _poll(
        srv, lambda t: _metric(t, IN_FLIGHT) == 0 and _metric(t, QUEUED) == 0, "no answer in flight or queued"
    )


def test_streaming_requests_get_429_before_any_200_when_the_queue_is_full(busy: SmallQueueServer) -> None:
    """One slot and a queue of one: with an answer in progress and one queued, a third streaming
    request on either streaming route is refused with 429 + Retry-After, not a 200 whose stream
    then carries the error."""
    _wait_idle(busy)
    chat = f"{busy.url}/v1/chat/completions"
    holder_body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "stream": True,
        "max_tokens": 400,
        "answer_mode": "abstractive",
    }
    queued_status: list[int] = []
    release_queued = threading.Event()

    def queued_request() -> None:
        body = {"messages": [{"role": "user", "content": QUESTION}], "stream": True, "max_tokens": 8}
        with (
            httpx.Client(timeout=120) as client,
            client.stream("POST", chat, json=body, headers=auth(busy)) as r,
        ):
            queued_status.append(r.status_code)  # headers arrive only once it has the slot
            release_queued.wait(120)

    ex = ThreadPoolExecutor(1)
    try:
        with (
            httpx.Client(timeout=120) as client,
            client.stream("POST", chat, json=holder_body, headers=auth(busy)) as holder,
        ):
            assert holder.status_code == 200
            _poll(busy, lambda t: _metric(t, IN_FLIGHT) == 1, "the first answer generating")
            with _worker_paused(busy):
                waiting = ex.submit(queued_request)
                _poll(busy, lambda t: _metric(t, QUEUED) == 1, "a second request queued", 5)
                assert not queued_status  # it waits for the slot before its 200
                refused = [
                    httpx.post(chat, json={**holder_body, "max_tokens": 8}, headers=auth(busy), timeout=60),
                    httpx.post(
                        f"{busy.url}/api/v1/ask",
                        json={"question": QUESTION, "stream": True, "answer_mode": "grounded"},
                        headers=auth(busy),
                        timeout=60,
                    ),
                ]
            for r in refused:
                assert r.status_code == 429, (r.status_code, r.text[:300])
                assert r.headers["content-type"].startswith("application/json")
                assert r.json()["error"]["code"] == "overloaded"
                assert int(r.headers["Retry-After"]) >= 1
        # The holder hung up: its slot goes to the queued request, which now gets its 200.
        _poll(busy, lambda t: _metric(t, QUEUED) == 0, "the queued request served")
        deadline = time.monotonic() + 60
        while not queued_status and time.monotonic() < deadline:
            time.sleep(0.05)  # polling for the queued request's response headers until the deadline
        assert queued_status == [200]
    finally:
        release_queued.set()
        ex.shutdown(wait=True)
    waiting.result()
    _wait_idle(busy)


def test_client_disconnect_before_a_non_streamed_answer_cancels_it(busy: SmallQueueServer) -> None:
    _wait_idle(busy)
    before = _metric(_metrics(busy), CANCELLED)
    body = json.dumps(
        {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 400, "answer_mode": "abstractive"}
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{busy.port}\r\n"
        f"Authorization: Bearer {busy.admin_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    # A raw socket: the request is sent whole, and closing it is the client going away mid-answer.
    with socket.create_connection(("127.0.0.1", busy.port), timeout=60) as sock:
        sock.sendall(head + body)
        _poll(busy, lambda t: _metric(t, IN_FLIGHT) == 1, "the answer generating")
        with _worker_paused(busy):  # however short the answer, it is still running when we hang up
            sock.close()
            _poll(busy, lambda t: _metric(t, IN_FLIGHT) == 0, "the slot freed at the disconnect", 5)
    _poll(busy, lambda t: _metric(t, CANCELLED) == before + 1, "the generation counted as cancelled")
    # The model is free again: the next question is answered.
    r = httpx.post(
        f"{busy.url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8},
        headers=auth(busy),
        timeout=120,
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
