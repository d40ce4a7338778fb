"""A real vLLM server behind the pool. Needs a GPU and vllm (`pip install 'kb-appliance[gpu]'`):
marked ``gpu``, which the default test run deselects (pyproject's ``-m 'not gpu'``); run it on an
accelerator machine with ``pytest -m gpu tests/integration/test_vllm_backend.py``.

The model: ``$APPLIANCE_TEST_VLLM_MODEL`` (a Hugging Face folder or a GGUF file), else the packaged
SmolLM2 GGUF, which vLLM loads through its GGUF support (tokenizer read from the file), so the test
needs nothing from the network.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from appliance.inference.accelerators import probe_all
from appliance.inference.backends.vllm import VllmBackend
from appliance.inference.base import Delta, GenerationParams
from appliance.inference.pool import InferencePool
from appliance.models import resolve_llm

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def vllm() -> Iterator[VllmBackend]:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed: pip install 'kb-appliance[gpu]'")
    accelerators = [p for p in probe_all() if p.found and p.platform in ("cuda", "rocm", "ascend")]
    if not accelerators:
        pytest.skip("no CUDA, ROCm or Ascend device")
    gpu = accelerators[0]
    entry = resolve_llm(os.environ.get("APPLIANCE_TEST_VLLM_MODEL", "default"), "smol")
    backend = VllmBackend(
        "smol",
        entry.path,
        entry.format,
        2048,
        1,
        [gpu.devices[0].index],
        gpu.platform,
        0.5,  # leave room for whatever else uses the card
        4,
        ["--enforce-eager"],  # no CUDA graph capture: starts faster, same answers
        start_timeout_s=900,
        request_timeout_s=120,
    )
    backend.start()
    try:
        yield backend
    finally:
        backend.close()


def test_vllm_answers_through_the_pool_with_its_key_kept_off_the_command_line(vllm: VllmBackend) -> None:
    pool = InferencePool([vllm], max_queue=2, queue_timeout_s=60)
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "Name three colours."},
    ]

    async def run() -> list[Delta]:
        return [d async for d in pool.chat(messages, GenerationParams(max_tokens=16, temperature=0.0))]

    deltas = asyncio.run(run())
    assert "".join(d.content for d in deltas).strip()
    assert deltas[-1].finish_reason in ("stop", "length") and deltas[-1].usage["prompt_tokens"] > 5
    assert pool.stats() == {"outstanding": 0, "waiting": 0}
    assert vllm.probe(2.0) and vllm.count_tokens("three colours") > 0

    # The key reached vLLM through $VLLM_API_KEY: requests without it are refused, and the key
    # is nowhere on its command line (which every user of the host can read).
    base = f"http://127.0.0.1:{vllm.port}/v1"
    assert httpx.get(f"{base}/models", timeout=10).status_code == 401
    key = vllm.process.env["VLLM_API_KEY"]
    ok = httpx.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["data"][0]["id"] == "smol"
    assert key.encode() not in Path(f"/proc/{vllm.process.pid}/cmdline").read_bytes()
