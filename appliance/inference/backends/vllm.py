"""vLLM backend: vLLM's OpenAI-compatible server in a child process, supervised by the shared
``ProcessBackend`` (start, probe, restart after a crash, close) like the llama.cpp worker.

vllm is the ``gpu`` extra; without it ``start()`` fails with the install hint. On Ascend the
vllm-ascend plugin hooks into the same command. ``vllm_command()`` is a pure function so the
flags are tested without a GPU.

The API key goes to vLLM in ``$VLLM_API_KEY``, not on its command line, where ``ps`` shows it to
every user of the host. Queueing: the pool admits at most ``max_num_seqs`` generations per server
and queues (boundedly, fairly) in front, so the pool's queue is the bound users meet. A vLLM that
has ``--max-num-queued-reqs`` also gets that as a backstop, with room for requests still being
aborted after their client went away (their slot in the pool is already free).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from appliance.domain import Unavailable
from appliance.egress import OFFLINE_ENV
from appliance.inference.backends.process import ProcessBackend

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
    max_queued_reqs: int | None = None,
    disable_log_requests: bool = True,
    extra: list[str] | None = None,
    python: str = sys.executable,
) -> list[str]:
    """``max_queued_reqs``: vLLM's own cap on waiting + running requests (``--max-num-queued-reqs``,
    newer vLLM only). ``disable_log_requests``: pass the flag older vLLM needs to keep prompts out
    of its log (newer vLLM logs none by default and no longer knows the flag). No API key here: it
    goes in the environment."""
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
        "--enable-prefix-caching",
    ]  # fmt: skip
    if max_queued_reqs is not None:
        argv += ["--max-num-queued-reqs", str(max_queued_reqs)]
    if disable_log_requests:
        argv.append("--disable-log-requests")
    if fmt in _QUANTIZATION:
        argv += ["--quantization", _QUANTIZATION[fmt]]
    return argv + list(extra or [])


# Engine arguments that came (or replaced an older flag) in some vLLM release.
_FEATURES = ("max_num_queued_reqs", "enable_log_requests")


def features_in(arg_utils_source: str) -> frozenset[str]:
    """Which of ``_FEATURES`` a vLLM's ``vllm/engine/arg_utils.py`` defines."""
    return frozenset(f for f in _FEATURES if f in arg_utils_source)


@functools.cache
def vllm_features() -> frozenset[str]:
    """``features_in`` the installed vLLM, read from its source rather than by importing it (an
    import takes seconds and initialises the GPU runtime). vllm is not pinned, and vLLM exits at
    start on a flag it does not know; none installed: none."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        return features_in((root / "engine" / "arg_utils.py").read_text(errors="replace"))
    except OSError:
        return frozenset()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmBackend(ProcessBackend):
    kind = "vllm"
    token_env = "VLLM_API_KEY"

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
        self.path = path
        self.slots = max_num_seqs
        self.port = _free_port()
        features = vllm_features()
        self.argv = vllm_command(
            path,
            name,
            self.port,
            fmt=fmt,
            tensor_parallel=tensor_parallel,
            max_model_len=context_tokens,
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_seqs=max_num_seqs,
            max_queued_reqs=2 * max_num_seqs if "max_num_queued_reqs" in features else None,
            disable_log_requests="enable_log_requests" not in features,
            extra=extra_args,
        )
        # Offline like the appliance (no hub look-ups, no usage statistics) whoever starts it.
        env = dict(os.environ) | OFFLINE_ENV
        visible = ",".join(str(d) for d in devices)
        match platform:
            case "cuda":
                env["CUDA_VISIBLE_DEVICES"] = visible
            case "rocm":
                env["HIP_VISIBLE_DEVICES"] = visible
            case "ascend":
                env["ASCEND_RT_VISIBLE_DEVICES"] = visible
        super().__init__(
            name,
            context_tokens,
            request_timeout_s,
            replica,
            label=f"vLLM {name}#{replica}",
            argv=self.argv,
            env=env,
            start_timeout_s=start_timeout_s,
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _wait_ready(self, proc: subprocess.Popen[str], deadline: float) -> int:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise Unavailable(f"vLLM exited with code {proc.returncode} while loading {self.name}")
            if self._answers(2.0):
                return self.port
            time.sleep(1.0)  # polling a child's health endpoint until a deadline
        raise Unavailable(f"vLLM did not become healthy in time for {self.name}")

    def _load(self) -> None:
        if importlib.util.find_spec("vllm") is None:
            raise Unavailable(f"the vLLM backend needs vllm: {INSTALL_HINT}")

    def _answers(self, timeout_s: float) -> bool:
        # vLLM's /health answers 200 only while its engine runs (it needs no key).
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def count_tokens(self, text: str) -> int:
        # vLLM exposes /tokenize; one local round trip keeps prompt fitting exact.
        try:
            r = httpx.post(
                f"http://127.0.0.1:{self.port}/tokenize",
                json={"model": self.name, "prompt": text, "add_special_tokens": False},
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=10,
            )
            return int(r.json()["count"])
        except (httpx.HTTPError, ValueError, KeyError):
            return math.ceil(len(text) / 3)
