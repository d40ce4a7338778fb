"""vLLM backend: spawns vLLM's OpenAI-compatible server and talks to it with the shared client.

vllm is the ``gpu`` extra; without it ``start()`` fails with the install hint. On Ascend the
vllm-ascend plugin hooks into the same command. ``vllm_command()`` is a pure function so the
flags are tested without a GPU. vLLM has no bound on its own waiting list; the pool admits at most
``max_num_seqs`` requests per server and queues (boundedly) in front, so vLLM never builds a backlog.
"""

from __future__ import annotations

import importlib.util
import math
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from appliance.domain import Unavailable
from appliance.inference.backends.openai_client import OpenAIChatClient
from appliance.inference.backends.process import WorkerProcess
from appliance.inference.base import Delta, GenerationParams

INSTALL_HINT = "pip install 'kb-appliance[gpu]' (and vllm-ascend on Huawei Ascend)"
# vLLM's --quantization names for the catalog formats; hf and gguf need none.
_QUANTIZATION = {"awq": "awq", "gptq": "gptq", "fp8": "fp8"}


def vllm_command(
    model_path: Path | str,
    served_name: str,
    port: int,
    *,
    fmt: str = "hf",
    tensor_parallel: int = 1,
    max_model_len: int = 4096,
    gpu_memory_utilization: float = 0.9,
    max_num_seqs: int = 16,
    extra: list[str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    argv = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_path),
        "--served-model-name", served_name,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--tensor-parallel-size", str(tensor_parallel),
        "--max-model-len", str(max_model_len),
        "--gpu-memory-utilization", f"{gpu_memory_utilization:g}",
        "--max-num-seqs", str(max_num_seqs),
        "--disable-log-requests",
        "--enable-prefix-caching",
    ]  # fmt: skip
    if fmt in _QUANTIZATION:
        argv += ["--quantization", _QUANTIZATION[fmt]]
    return argv + list(extra or [])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmBackend:
    kind = "vllm"

    def __init__(
        self,
        name: str,
        path: Path,
        fmt: str,
        context_tokens: int,
        tensor_parallel: int,
        devices: list[int],
        platform: str,
        gpu_memory_utilization: float,
        max_num_seqs: int,
        extra_args: list[str],
        start_timeout_s: float = 900.0,
        request_timeout_s: float = 600.0,
        replica: int = 0,
    ) -> None:
        self.name = name
        self.path = path
        self.replica = replica
        self.slots = max_num_seqs
        self._context_tokens = context_tokens
        self.request_timeout_s = request_timeout_s
        self.port = _free_port()
        self._token = secrets.token_urlsafe(24)
        self.argv = vllm_command(
            path,
            name,
            self.port,
            fmt=fmt,
            tensor_parallel=tensor_parallel,
            max_model_len=context_tokens,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            extra=[*extra_args, "--api-key", self._token],
        )
        env = dict(os.environ)
        visible = ",".join(str(d) for d in devices)
        match platform:
            case "cuda":
                env["CUDA_VISIBLE_DEVICES"] = visible
            case "rocm":
                env["HIP_VISIBLE_DEVICES"] = visible
            case "ascend":
                env["ASCEND_RT_VISIBLE_DEVICES"] = visible
        self.worker = WorkerProcess(
            f"vLLM {name}#{replica}", self.argv, env, start_timeout_s, self._wait_health
        )

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    def _wait_health(self, proc: Any, deadline: float) -> int:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unavailable(f"vLLM exited with code {proc.returncode} while loading {self.name}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self.port
            except httpx.HTTPError:
                pass
            time.sleep(1.0)  # polling a child's health endpoint until a deadline
        raise Unavailable(f"vLLM did not become healthy in time for {self.name}")

    def ensure_running(self) -> bool:
        return self.worker.ensure_running()

    def start(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise Unavailable(f"the vLLM backend needs vllm: {INSTALL_HINT}")
        self.ensure_running()

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "model": self.name,
            "replica": self.replica,
            "alive": self.worker.alive(),
            "pid": self.worker.pid,
            "starts": self.worker.starts,
        }

    def count_tokens(self, text: str) -> int:
        # vLLM exposes /tokenize; one local round trip keeps prompt fitting exact.
        try:
            r = httpx.post(
                f"http://127.0.0.1:{self.port}/tokenize",
                json={"model": self.name, "prompt": text, "add_special_tokens": False},
                headers={"Authorization": f"Bearer {self._token}"},
                timeout=10,
            )
            return int(r.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError):
            return math.ceil(len(text) / 3)

    async def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> AsyncIterator[Delta]:
        client = OpenAIChatClient(
            f"http://127.0.0.1:{self.port}/v1", self._token, self.name, self.request_timeout_s
        )
        async for delta in client.chat(messages, params):
            yield delta

    def stop(self) -> None:
        self.worker.stop()
