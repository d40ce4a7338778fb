"""Placement on synthetic device lists, vLLM command and llama.cpp worker construction, doctor's
route check."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from appliance.domain import Unavailable
from appliance.inference.accelerators import Device, ProbeResult
from appliance.inference.backends.llamacpp import LlamaCppBackend, worker_config
from appliance.inference.backends.vllm import VllmBackend, features_in, vllm_command, vllm_features
from appliance.inference.placement import ModelRequest, place
from appliance.models import ModelEntry

GIB = 2**30


def cpu(free_gib: float = 16) -> ProbeResult:
    return ProbeResult("cpu", True, "cpu", [Device("cpu", 0, "x86", 32 * GIB, int(free_gib * GIB))])


def gpus(platform: str, n: int, gib: int) -> ProbeResult:
    return ProbeResult(platform, True, platform, [Device(platform, i, "gpu", gib * GIB) for i in range(n)])  # type: ignore[arg-type]


def model(fmt: str = "hf", weights_gib: float = 14, kv_per_token: int = 131072) -> ModelEntry:
    return ModelEntry(
        "m", "llm", fmt, Path("/models/m"), "path",  # type: ignore[arg-type]
        context_length=32768, weights_bytes=int(weights_gib * GIB), kv_bytes_per_token=kv_per_token,
    )  # fmt: skip


def test_gguf_runs_on_llamacpp_on_the_cpu() -> None:
    p = place(ModelRequest("m", model("gguf", 0.1, 23040)), [gpus("cuda", 0, 0), cpu()])
    assert (p.backend, p.platform, p.fits) == ("llamacpp", "cpu", True)
    assert "GGUF" in p.reason and "CPU" in p.reason


def test_gguf_uses_metal_on_apple_silicon() -> None:
    mps = ProbeResult("mps", True, "mps", [Device("mps", 0, "Apple GPU", 24 * GIB)])
    p = place(ModelRequest("m", model("gguf", 4, 131072)), [mps, cpu()])
    assert (p.backend, p.platform) == ("llamacpp", "mps")


def test_gguf_too_big_for_ram_is_flagged() -> None:
    p = place(ModelRequest("m", model("gguf", 40)), [cpu(free_gib=16)])
    assert p.backend == "llamacpp" and not p.fits and "RAM" in p.reason


def test_hf_model_fits_one_gpu() -> None:
    p = place(
        ModelRequest("m", model("awq", 5), context_tokens=4096, concurrency=8), [gpus("cuda", 4, 24), cpu()]
    )
    assert (p.backend, p.platform, p.tensor_parallel, p.fits) == ("vllm", "cuda", 1, True)
    assert p.memory_bytes == 5 * GIB + 131072 * 4096 * 8


def test_kv_cache_for_concurrency_pushes_to_tensor_parallel() -> None:
    # 14 GiB weights fit one 24 GiB GPU alone, but 16 sequences of 8k tokens need 16 GiB of KV more.
    alone = place(ModelRequest("m", model(), context_tokens=8192, concurrency=1), [gpus("cuda", 4, 24)])
    busy = place(ModelRequest("m", model(), context_tokens=8192, concurrency=16), [gpus("cuda", 4, 24)])
    assert alone.tensor_parallel == 1
    assert busy.tensor_parallel == 2 and len(busy.devices) == 2 and busy.fits
    assert "tensor parallel 2" in busy.reason


def test_cuda_before_rocm_before_ascend() -> None:
    probes = [gpus("ascend", 8, 64), gpus("rocm", 2, 64), gpus("cuda", 1, 80), cpu()]
    assert place(ModelRequest("m", model()), probes).platform == "cuda"
    assert place(ModelRequest("m", model()), probes[:2]).platform == "rocm"
    on_npu = place(ModelRequest("m", model()), probes[:1])
    assert on_npu.platform == "ascend" and "vllm-ascend" in on_npu.reason


def test_hf_model_without_accelerator_is_not_placed() -> None:
    p = place(ModelRequest("m", model("fp8")), [cpu()])
    assert p.backend is None and not p.fits and "no accelerator fits" in p.reason


def test_too_big_for_every_gpu_says_how_much_is_missing() -> None:
    p = place(ModelRequest("m", model(weights_gib=300)), [gpus("cuda", 2, 80)])
    assert not p.fits and "2 cuda device(s)" in p.reason


def test_explicit_backends() -> None:
    assert place(ModelRequest("r", None, "remote"), [cpu()]).backend == "remote"
    wrong = place(ModelRequest("m", model("gptq"), "llamacpp"), [cpu()])
    assert not wrong.fits and "GGUF" in wrong.reason
    forced = place(ModelRequest("m", model("awq", 5), "vllm"), [gpus("rocm", 1, 64)])
    assert (forced.backend, forced.platform) == ("vllm", "rocm")


def test_vllm_command_has_the_flags() -> None:
    argv = vllm_command(
        "/models/q", "qwen", 8123, fmt="awq", tensor_parallel=2, max_model_len=8192,
        gpu_memory_utilization=0.85, max_num_seqs=32, extra=["--seed", "1"], python="py",
    )  # fmt: skip
    assert argv[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert value("--model") == "/models/q" and value("--served-model-name") == "qwen"
    assert value("--host") == "127.0.0.1" and value("--port") == "8123"
    assert value("--tensor-parallel-size") == "2" and value("--max-model-len") == "8192"
    assert value("--gpu-memory-utilization") == "0.85" and value("--max-num-seqs") == "32"
    assert value("--quantization") == "awq"
    assert "--enable-prefix-caching" in argv and "--disable-log-requests" in argv
    assert "--max-num-queued-reqs" not in argv  # only for a vLLM that knows the flag
    assert argv[-2:] == ["--seed", "1"]
    assert "--api-key" not in argv  # the key is never on the command line
    assert "--quantization" not in vllm_command("/m", "m", 1, fmt="hf")
    newer = vllm_command("/m", "m", 1, max_num_seqs=8, max_queued_reqs=16, disable_log_requests=False)
    assert newer[newer.index("--max-num-queued-reqs") + 1] == "16" and "--disable-log-requests" not in newer


def test_vllm_features_come_from_its_argument_definitions() -> None:
    old = "class AsyncEngineArgs(EngineArgs):\n    disable_log_requests: bool = False\n"
    new = (
        "max_num_queued_reqs: int | None = SchedulerConfig.max_num_queued_reqs\n"
        "class AsyncEngineArgs(EngineArgs):\n    enable_log_requests: bool = False\n"
    )
    assert features_in(old) == frozenset()
    assert features_in(new) == {"max_num_queued_reqs", "enable_log_requests"}


def test_vllm_backend_sets_visible_devices_and_keeps_the_key_off_argv() -> None:
    b = VllmBackend("m", Path("/m"), "fp8", 4096, 2, [2, 3], "cuda", 0.9, 16, [])
    assert b.process.env["CUDA_VISIBLE_DEVICES"] == "2,3" and b.slots == 16
    assert "fp8" in b.argv
    # vLLM reads $VLLM_API_KEY; argv is readable by every user of the host (ps, /proc/PID/cmdline).
    key = b.process.env["VLLM_API_KEY"]
    assert len(key) >= 24 and "--api-key" not in b.argv and not any(key in a for a in b.argv)
    bounded = "--max-num-queued-reqs" in b.argv
    assert bounded == ("max_num_queued_reqs" in vllm_features())
    if bounded:  # headroom for aborts still in progress after the pool freed their slots
        assert b.argv[b.argv.index("--max-num-queued-reqs") + 1] == "32"
    npu = VllmBackend("m", Path("/m"), "hf", 4096, 1, [0], "ascend", 0.9, 8, [])
    assert npu.process.env["ASCEND_RT_VISIBLE_DEVICES"] == "0"


def test_llamacpp_worker_offloads_to_metal_only_on_apple_silicon() -> None:
    args = ("smol", Path("/models/smol.gguf"), 2048, 4, 256)
    assert worker_config(*args, platform="mps")["gpu_layers"] == -1  # all layers on Metal
    assert worker_config(*args, platform="cpu")["gpu_layers"] == 0
    assert worker_config(*args)["gpu_layers"] == 0
    # The backend hands exactly that to its worker process.
    b = LlamaCppBackend(*args, platform="mps")
    try:
        sent = json.loads(b.process.env["APPLIANCE_WORKER_CONFIG"])
        assert sent["gpu_layers"] == -1 and sent["context_tokens"] == 2048 and sent["threads"] == 4
    finally:
        b.close()


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_without_vllm_gives_the_install_hint() -> None:
    b = VllmBackend("m", Path("/m"), "hf", 4096, 1, [0], "cuda", 0.9, 16, [])
    with pytest.raises(Unavailable, match=r"kb-appliance\[gpu\]"):
        b.start()


def test_doctor_route_check_reads_the_kernel_tables() -> None:
    from appliance.commands.doctor import default_route

    header = "Iface\tDestination\tGateway\tFlags\n"
    with_default = {"/proc/net/route": header + "eth0\t00000000\t0101A8C0\t0003\n"}
    loopback_only = {"/proc/net/route": header, "/proc/net/ipv6_route": ""}
    assert default_route(with_default.get) is True
    assert default_route(loopback_only.get) is False


def test_doctor_flags_a_remote_model_the_egress_guard_would_block() -> None:
    from appliance.commands.doctor import remote_check
    from appliance.settings import Settings

    blocked = Settings.model_construct()
    assert not remote_check(blocked, "big", "http://10.0.0.5:8000/v1")["ok"]
    assert "APPLIANCE_EGRESS__ALLOW" in remote_check(blocked, "big", "http://10.0.0.5:8000/v1")["error"]
    assert remote_check(blocked, "local", "http://127.0.0.1:9000/v1")["ok"]
    allowed = Settings(egress={"block": True, "allow": ["10.0.0.5"]})
    assert remote_check(allowed, "big", "http://10.0.0.5:8000/v1")["ok"]
    assert not remote_check(blocked, "bad", "not a url")["ok"]


def test_remote_servers_by_url_join_the_pool_one_replica_each(tmp_path: Path) -> None:
    """``inference.urls``: vLLM replicas or other nodes, each one replica of the pool (nothing is
    contacted to build it); doctor checks every URL against the egress guard."""
    from appliance.commands.doctor import remote_checks
    from appliance.container import Container
    from appliance.settings import Settings

    urls = ["http://127.0.0.1:9001/v1", "http://127.0.0.1:9002/v1"]
    settings = Settings(
        data_dir=str(tmp_path),
        inference={"backend": "remote", "urls": urls, "replicas": 5, "max_num_seqs": 3},
        models={"llm_name": "big", "llm_size": "7B"},
    )
    container = Container(settings)
    ((req, _, served),) = container.model_plan()
    assert req.concurrency == 2  # two servers, not inference.replicas (5)
    replicas = container._replicas(*container.model_plan()[0])
    assert [(b.name, b.replica, b.client.base_url, b.slots) for b in replicas] == [  # type: ignore[attr-defined]
        ("big", 0, urls[0], 3),
        ("big", 1, urls[1], 3),
    ]
    assert remote_checks(settings, "big", served.urls)["ok"]
    blocked = remote_checks(settings, "big", [urls[0], "http://10.0.0.7:8000/v1"])
    assert not blocked["ok"] and "10.0.0.7" in blocked["error"]
    one = Settings(data_dir=str(tmp_path), inference={"backend": "remote", "url": urls[0], "replicas": 2})
    assert [b.client.base_url for b in Container(one)._replicas(*Container(one).model_plan()[0])] == [  # type: ignore[attr-defined]
        urls[0],
        urls[0],
    ]
