"""llama.cpp backend: a GGUF model in a worker process (see ``llamacpp_worker``), spoken to with
the same OpenAI protocol client as vLLM and remote servers.

The parent keeps only the vocabulary (``vocab_only``) to count tokens for prompt fitting. One
generation runs at a time per worker (llama.cpp contexts are not re-entrant); the pool in front
queues and sheds load, and runs N workers for N parallel answers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from appliance.domain import Unavailable
from appliance.inference.backends.process import ProcessBackend, read_ready_line


def worker_config(
    name: str,
    path: Path,
    context_tokens: int,
    threads: int,
    batch_tokens: int,
    warm_messages: list[dict[str, str]] | None = None,
    platform: str = "cpu",
) -> dict[str, Any]:
    """What the worker process is told (``$APPLIANCE_WORKER_CONFIG``). Pure, so the arguments are
    tested without starting one. On Apple silicon (placement platform ``mps``) every layer goes to
    Metal (``gpu_layers`` -1: llama.cpp's "all"); elsewhere none, because off Apple silicon the
    placement runs llama.cpp on the CPU (GPUs go to vLLM)."""
    return {
        "name": name,
        "path": str(path),
        "context_tokens": context_tokens,
        "threads": threads,
        "batch_tokens": batch_tokens,
        "gpu_layers": -1 if platform == "mps" else 0,
        "warm_messages": warm_messages or [],
    }


# ggml's names for the CPU features a llama.cpp build is compiled for, and the /proc/cpuinfo flag
# each one needs. A build with one the CPU lacks dies on an illegal instruction.
GGML_CPU_FLAGS = {
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX_VNNI": "avx_vnni",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}


# The CPU flags the Makefile's AMX build of llama.cpp needs (its LLAMA_AMX_FLAGS; a test keeps
# the two lists equal). Where the CPU has them all, an AVX2 build leaves AMX unused.
AMX_BUILD_FLAGS = frozenset(
    {"amx_int8", "amx_tile", "avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16"}
)


def build_features(system_info: str) -> list[str]:
    """The features on llama.cpp's system-info line (``CPU : AVX2 = 1 | AMX_INT8 = 1 | ...``)."""
    return [name for name, value in re.findall(r"([A-Z][A-Z0-9_]*) = (\d+)", system_info) if value == "1"]


def check_build(features: list[str], flags: set[str]) -> dict[str, Any]:
    """Whether this llama.cpp build runs on this CPU, and whether it leaves speed unused (pure).
    ``flags``: the CPU's /proc/cpuinfo flags (empty where there is none: nothing is checked)."""
    out: dict[str, Any] = {"ok": True, "features": features}
    if not flags:
        return out
    missing = [f for f in features if f in GGML_CPU_FLAGS and GGML_CPU_FLAGS[f] not in flags]
    if missing:
        out |= {
            "ok": False,
            "error": f"llama.cpp was built for {', '.join(missing)}, which this CPU lacks: its worker "
            "would stop on an illegal instruction. Rebuild it: `make install LLAMA_CPU=avx2`",
        }
    elif flags >= AMX_BUILD_FLAGS and "AMX_INT8" not in features:
        out["hint"] = (
            "this CPU has AMX-INT8 and the llama.cpp build does not use it: `make install "
            "LLAMA_CPU=amx` prefills about 4x faster"
        )
    return out


def build_report(flags: set[str], timeout_s: float = 60.0) -> dict[str, Any]:
    """``check_build`` for the installed llama-cpp-python. Asked in a child process: loading a
    build made for another CPU can kill the process that loads it."""
    code = "import sys, llama_cpp; sys.stdout.write(llama_cpp.llama_print_system_info().decode())"

    def failed(error: str) -> dict[str, Any]:
        return {"ok": False, "features": [], "error": error}

    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return failed(f"loading llama.cpp took over {timeout_s:.0f} s")
    if done.returncode < 0:
        return failed(
            f"loading llama.cpp died of signal {-done.returncode} (4 is an illegal instruction: "
            "a build for another CPU; rebuild with `make install LLAMA_CPU=avx2`)"
        )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return failed(f"llama-cpp-python does not load ({last}); run `make install`")
    return check_build(build_features(done.stdout), flags)


class LlamaCppBackend(ProcessBackend):
    kind = "llamacpp"
    slots = 1
    token_env = "APPLIANCE_WORKER_TOKEN"

    def __init__(
        self,
        name: str,
        path: Path,
        context_tokens: int,
        threads: int,
        batch_tokens: int,
        start_timeout_s: float = 180.0,
        request_timeout_s: float = 600.0,
        warm_messages: list[dict[str, str]] | None = None,
        log_file: Path | None = None,
        replica: int = 0,
        tcp: bool = False,
        platform: str = "cpu",
    ) -> None:
        """``tcp``: listen on a loopback port instead of a private Unix socket (to expose the
        worker's OpenAI endpoint to other clients, as the tests of the remote backend do).
        ``platform``: the placement's (``mps``: offload to Metal, else the CPU)."""
        self.path = path
        self.threads = threads
        self.batch_tokens = batch_tokens
        self.platform = platform
        self._vocab: Any = None
        self._vocab_lock = threading.Lock()
        config = worker_config(name, path, context_tokens, threads, batch_tokens, warm_messages, platform)
        self._sock_dir = None if tcp else tempfile.mkdtemp(prefix="kbw-")  # short: sun_path is 108 bytes
        if self._sock_dir:
            config["uds"] = os.path.join(self._sock_dir, "worker.sock")
        self.uds = config.get("uds")
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_WORKER_")}
        env["APPLIANCE_WORKER_CONFIG"] = json.dumps(config)
        super().__init__(
            name,
            context_tokens,
            request_timeout_s,
            replica,
            label=f"llama.cpp worker {name}#{replica}",
            argv=[sys.executable, "-m", "appliance.inference.backends.llamacpp_worker"],
            env=env,
            start_timeout_s=start_timeout_s,
            log_file=log_file,
        )

    def _wait_ready(self, proc: subprocess.Popen[str], deadline: float) -> int | None:
        line = read_ready_line(proc, deadline)
        try:
            where = json.loads(line)
            return None if "uds" in where else int(where["port"])
        except (ValueError, KeyError, TypeError) as exc:
            raise Unavailable(f"the model worker said {line!r} instead of where it listens") from exc

    @property
    def base_url(self) -> str:
        host = "worker" if self.uds else f"127.0.0.1:{self.process.port}"
        return f"http://{host}/v1"

    def _prepare(self) -> None:
        if self._sock_dir:  # close() removed it; a start after that needs it back
            os.makedirs(self._sock_dir, mode=0o700, exist_ok=True)
        super()._prepare()

    def _load(self) -> None:
        self._load_vocab()

    def _load_vocab(self) -> Any:
        with self._vocab_lock:
            if self._vocab is None:
                try:
                    from llama_cpp import Llama
                except ImportError as exc:  # pragma: no cover - install problem
                    raise Unavailable(
                        f"llama-cpp-python is not installed ({exc}); run `make install`"
                    ) from exc
                self._vocab = Llama(model_path=str(self.path), vocab_only=True, verbose=False)
            return self._vocab

    def count_tokens(self, text: str) -> int:
        vocab = self._load_vocab()
        with self._vocab_lock:
            return len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _release(self) -> None:
        if self._sock_dir:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        with self._vocab_lock:
            if self._vocab is not None:
                self._vocab.close()
                self._vocab = None
