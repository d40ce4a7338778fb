"""Placement: which backend serves a model, on which devices, and why. A pure function of the
model catalog and the probe results, so it is tested with synthetic device lists.

Rules (the reason string says which one fired):
- an explicit backend in the settings wins (``remote`` needs no device at all);
- GGUF models run on llama.cpp: on Apple silicon through Metal, otherwise on the CPU;
- Hugging Face formats (hf, awq, gptq, fp8) run on vLLM: CUDA first, then ROCm, then Ascend
  (vllm-ascend), with tensor parallelism over the fewest GPUs of one node whose memory holds
  weights + KV cache for the configured context and concurrency;
- a model that fits nowhere gets ``fits=False`` and the reason, never a silent choice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from appliance.inference.accelerators import Device, ProbeResult
from appliance.models import ModelEntry

Backend = Literal["llamacpp", "vllm", "remote"]
Requested = Literal["auto", "llamacpp", "vllm", "remote"]

GIB = 2**30
_GPU_ORDER = ("cuda", "rocm", "ascend")


@dataclass(frozen=True)
class ModelRequest:
    name: str
    entry: ModelEntry | None  # None for remote models: nothing local to size
    backend: Requested = "auto"
    context_tokens: int = 2048
    concurrency: int = 1  # sequences decoded at once across the model's replicas


@dataclass
class Placement:
    model: str
    backend: Backend | None
    platform: str | None
    devices: list[Device] = field(default_factory=list)
    tensor_parallel: int = 1
    memory_bytes: int = 0
    fits: bool = True
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _found(probes: list[ProbeResult], platform: str) -> list[Device]:
    return [d for p in probes if p.found and p.platform == platform for d in p.devices]


def _gb(n: int) -> str:
    return f"{n / GIB:.2f} GiB"


def _on_host(req: ModelRequest, probes: list[ProbeResult], need: int, why: str) -> Placement:
    mps = _found(probes, "mps")
    if mps:
        dev = mps[0]
        fits = dev.memory_bytes == 0 or need <= dev.memory_bytes
        return Placement(
            req.name, "llamacpp", "mps", [dev], 1, need, fits,
            f"{why}; llama.cpp with Metal on Apple silicon (needs {_gb(need)}"
            + ("" if fits else f", more than the {_gb(dev.memory_bytes)} Metal may use") + ")",
        )  # fmt: skip
    cpus = _found(probes, "cpu")
    dev = cpus[0] if cpus else Device("cpu", 0, "cpu", 0)
    budget = dev.free_bytes if dev.free_bytes is not None else dev.memory_bytes
    fits = budget == 0 or need <= budget
    note = "" if fits else f", more than the {_gb(budget)} of RAM available"
    return Placement(
        req.name,
        "llamacpp",
        "cpu",
        [dev],
        1,
        need,
        fits,
        f"{why}; llama.cpp on the CPU (needs {_gb(need)}{note})",
    )


def _on_gpus(
    req: ModelRequest, probes: list[ProbeResult], need: int, utilization: float, why: str
) -> Placement:
    tried = []
    for platform in _GPU_ORDER:
        devices = sorted(_found(probes, platform), key=lambda d: d.memory_bytes, reverse=True)
        if not devices:
            tried.append(f"no {platform} devices")
            continue
        tp = 1
        while tp <= len(devices):
            chosen = devices[:tp]
            usable = min(d.memory_bytes for d in chosen) * utilization * tp
            if need <= usable:
                engine = "vllm-ascend" if platform == "ascend" else "vLLM"
                return Placement(
                    req.name, "vllm", platform, chosen, tp, need, True,
                    f"{why}; {engine} on {tp} {platform} device(s), tensor parallel {tp}: needs "
                    f"{_gb(need)}, {_gb(int(usable))} usable at {utilization:.0%} memory utilisation",
                )  # fmt: skip
            tp *= 2  # vLLM wants tensor-parallel sizes that divide the attention heads: powers of two
        total = int(sum(d.memory_bytes for d in devices) * utilization)
        tried.append(f"{len(devices)} {platform} device(s) hold {_gb(total)} < {_gb(need)}")
    return Placement(
        req.name, None, None, [], 1, need, False, f"{why}; no accelerator fits it ({'; '.join(tried)})"
    )


def place(req: ModelRequest, probes: list[ProbeResult], gpu_memory_utilization: float = 0.9) -> Placement:
    if req.backend == "remote" or req.entry is None:
        return Placement(
            req.name, "remote", None, reason="remote OpenAI-compatible endpoint: nothing to place"
        )
    entry = req.entry
    context = min(req.context_tokens, entry.context_length or req.context_tokens)
    need = entry.memory_bytes(context, req.concurrency)
    match req.backend:
        case "llamacpp":
            if entry.format != "gguf":
                return Placement(
                    req.name, None, None, [], 1, need, False,
                    f"llama.cpp was requested but {entry.format} weights need GGUF; convert the model or use vllm",
                )  # fmt: skip
            return _on_host(req, probes, need, "llama.cpp requested in the settings")
        case "vllm":
            return _on_gpus(req, probes, need, gpu_memory_utilization, "vLLM requested in the settings")
        case _:
            if entry.format == "gguf":
                return _on_host(req, probes, need, "GGUF weights")
            return _on_gpus(req, probes, need, gpu_memory_utilization, f"{entry.format} weights need vLLM")
