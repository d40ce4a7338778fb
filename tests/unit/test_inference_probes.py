"""Accelerator probes fed with recorded outputs of the real tools, and the GGUF/HF catalog sizing."""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any

import pytest

from appliance.inference import accelerators as acc
from appliance.models import describe_hf, read_gguf_metadata, resolve_llm

NVIDIA_SMI_OUT = "0, NVIDIA A100-SXM4-80GB, 81920, 80100\n1, NVIDIA A100-SXM4-80GB, 81920, 81000\n"
ROCM_SMI_OUT = json.dumps(
    {
        "card0": {
            "VRAM Total Memory (B)": "68702699520",
            "VRAM Total Used Memory (B)": "10960896",
            "Card Series": "Instinct MI210",
        },
        "system": {"Driver version": "6.3.6"},
    }
)
AMD_SMI_OUT = json.dumps(
    [
        {
            "gpu": 0,
            "asic": {"market_name": "AMD Instinct MI300X"},
            "vram": {"type": "HBM", "size": {"value": 196592, "unit": "MB"}},
        }
    ]
)
NPU_SMI_OUT = """\
+------------------------------------------------------------------------------------------------+
| npu-smi 23.0.rc2                 Version: 23.0.rc2                                             |
+---------------------------+---------------+----------------------------------------------------+
| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|
| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |
+===========================+===============+====================================================+
| 0     910B3               | OK            | 93.5        40                0    / 0             |
| 0                         | 0000:C1:00.0  | 0           0    / 0          3161 / 65536         |
+===========================+===============+====================================================+
| 1     910B3               | OK            | 89.8        39                0    / 0             |
| 0                         | 0000:C2:00.0  | 0           0    / 0          3162 / 65536         |
+===========================+===============+====================================================+
"""
CPUINFO = """\
processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma f16c avx512f avx512_vnni amx_tile amx_bf16 amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 avx avx2 fma f16c avx512f avx512_vnni amx_tile amx_bf16 amx_int8
"""
MEMINFO = "MemTotal:       32768000 kB\nMemFree:         1000000 kB\nMemAvailable:   16384000 kB\n"


def runner(outputs: dict[str, str]) -> Any:
    return lambda argv: outputs.get(argv[0])


def no_module(name: str) -> Any:
    raise ImportError(name)


def test_nvidia_from_nvidia_smi_when_nvml_is_missing() -> None:
    r = acc.probe_nvidia(runner({"nvidia-smi": NVIDIA_SMI_OUT}), importer=no_module)
    assert r.found and len(r.devices) == 2
    assert r.devices[0].memory_bytes == 81920 * 2**20 and r.devices[0].free_bytes == 80100 * 2**20
    assert "nvidia-smi" in r.reason


def test_nvidia_absent_says_why() -> None:
    r = acc.probe_nvidia(runner({}), importer=no_module)
    assert not r.found and "nvidia-smi" in r.reason and r.devices == []


def test_nvidia_through_nvml() -> None:
    class Mem:
        total, free = 24 * 2**30, 20 * 2**30

    class FakeNvml:  # stands in for pynvml, which needs a driver
        def nvmlInit(self) -> None: ...
        def nvmlShutdown(self) -> None: ...
        def nvmlDeviceGetCount(self) -> int:
            return 1

        def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
            return i

        def nvmlDeviceGetName(self, h: int) -> bytes:
            return b"NVIDIA L4"

        def nvmlDeviceGetMemoryInfo(self, h: int) -> Mem:
            return Mem()

    r = acc.probe_nvidia(runner({}), importer=lambda name: FakeNvml())
    assert r.found and r.devices[0].name == "NVIDIA L4" and "NVML" in r.reason


def test_amd_prefers_amd_smi_then_rocm_smi() -> None:
    r = acc.probe_amd(runner({"amd-smi": AMD_SMI_OUT}))
    assert r.found and r.devices[0].name == "AMD Instinct MI300X"
    assert r.devices[0].memory_bytes == 196592 * 2**20
    r = acc.probe_amd(runner({"rocm-smi": ROCM_SMI_OUT}))
    assert r.found and r.devices[0].memory_bytes == 68702699520
    assert "amd-smi absent" not in r.reason
    r = acc.probe_amd(runner({"rocm-smi": "not json"}))
    assert not r.found and "unreadable" in r.reason


def test_ascend_from_npu_smi() -> None:
    r = acc.probe_ascend(runner({"npu-smi": NPU_SMI_OUT}), importer=no_module)
    assert r.found and [d.index for d in r.devices] == [0, 1]
    assert r.devices[0].memory_bytes == 65536 * 2**20
    assert r.devices[0].free_bytes == (65536 - 3161) * 2**20
    missing = acc.probe_ascend(runner({}), importer=no_module)
    assert not missing.found and "npu-smi" in missing.reason and "torch_npu" in missing.reason


def test_apple_only_on_apple_silicon() -> None:
    assert not acc.probe_apple("Linux", "x86_64").found
    assert not acc.probe_apple("Darwin", "x86_64").found
    r = acc.probe_apple("Darwin", "arm64", memory_bytes=32 * 2**30, importer=no_module)
    assert r.found and r.devices[0].memory_bytes == 24 * 2**30


def test_cpu_reads_isa_flags_and_memory() -> None:
    files = {"/proc/cpuinfo": CPUINFO, "/proc/meminfo": MEMINFO}
    r = acc.probe_cpu(files.get, cpu_count=2)
    assert r.found
    assert {"AVX2", "AVX-512", "AVX-512 VNNI", "AMX"} <= set(r.details["isa"])
    assert r.devices[0].memory_bytes == 32768000 * 1024
    assert r.devices[0].free_bytes == 16384000 * 1024
    assert "Xeon" in r.devices[0].name and "2 logical cores" in r.reason


def test_probe_all_on_this_machine_finds_a_cpu() -> None:
    results = acc.probe_all()
    assert [r.platform for r in results] == ["cuda", "rocm", "ascend", "mps", "cpu"]
    assert results[-1].found and all(r.reason for r in results)


def test_gguf_header_of_the_packaged_model() -> None:
    entry = resolve_llm("default", "smol")
    meta = read_gguf_metadata(entry.path)
    assert meta["general.architecture"] == "llama"
    assert entry.format == "gguf" and entry.quantization == "Q4_1"
    assert entry.context_length == 8192 and entry.chat_template
    # SmolLM2-135M: 30 layers, 3 KV heads of 64 dims, f16 K and V.
    assert entry.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2
    assert entry.memory_bytes(2048, 2) == entry.weights_bytes + entry.kv_bytes_per_token * 4096


@pytest.mark.parametrize(("quant", "fmt"), [(None, "hf"), ("awq", "awq"), ("gptq", "gptq"), ("fp8", "fp8")])
def test_hf_folder_format_from_its_config(tmp_path: Path, quant: str | None, fmt: str) -> None:
    config: dict[str, Any] = {
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "hidden_size": 4096,
        "max_position_embeddings": 32768,
        "torch_dtype": "bfloat16",
    }
    if quant:
        config["quantization_config"] = {"quant_method": quant}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 1000)
    entry = describe_hf("m", tmp_path)
    assert entry.format == fmt and entry.weights_bytes == 1000 and entry.chat_template
    assert entry.context_length == 32768
    assert entry.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert resolve_llm(str(tmp_path), "m").format == fmt


SYSTEM_INFO_AMX = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | AVX512 = 1 | "
    "AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | LLAMAFILE = 1 | OPENMP = 1 | "
)
SYSTEM_INFO_AVX2 = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | "
)
AVX2_FLAGS = {"ssse3", "avx", "avx2", "f16c", "fma", "bmi2"}
SPR_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512vbmi", "avx512_vnni", "avx512_bf16"}
SPR_FLAGS |= {"amx_int8", "amx_tile"}


def test_llama_build_features_from_its_system_info() -> None:
    from appliance.inference.backends.llamacpp import build_features

    assert build_features(SYSTEM_INFO_AVX2) == [
        "SSE3",
        "SSSE3",
        "AVX",
        "AVX2",
        "F16C",
        "FMA",
        "BMI2",
        "OPENMP",
    ]
    assert "AMX_INT8" in build_features(SYSTEM_INFO_AMX)
    assert "AMX_INT8" not in build_features(SYSTEM_INFO_AMX.replace("AMX_INT8 = 1", "AMX_INT8 = 0"))


def test_llama_build_for_another_cpu_is_refused_and_an_unused_amx_is_pointed_out() -> None:
    from appliance.inference.backends.llamacpp import build_features, check_build

    amx, avx2 = build_features(SYSTEM_INFO_AMX), build_features(SYSTEM_INFO_AVX2)
    assert check_build(amx, SPR_FLAGS) == {"ok": True, "features": amx}
    wrong = check_build(amx, AVX2_FLAGS)  # an AMX build copied to an older CPU
    assert not wrong["ok"]
    assert "AVX512, AVX512_VBMI, AVX512_VNNI, AVX512_BF16, AMX_INT8" in wrong["error"]
    assert "LLAMA_CPU=avx2" in wrong["error"]
    slow = check_build(avx2, SPR_FLAGS)  # runs, but leaves AMX unused
    assert slow["ok"] and "LLAMA_CPU=amx" in slow["hint"]
    assert "hint" not in check_build(avx2, AVX2_FLAGS)
    assert check_build(amx, set()) == {"ok": True, "features": amx}  # no cpuinfo: nothing to check


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 builds only")
def test_llama_build_report_of_the_installed_build_on_this_cpu() -> None:
    from appliance.inference.backends.llamacpp import build_report

    report = build_report(acc.cpu_flags())
    assert report["ok"], report
    assert "AVX2" in report["features"] or not acc.cpu_flags()


def test_doctor_and_the_makefile_agree_on_what_the_amx_build_needs() -> None:
    from appliance.inference.backends.llamacpp import AMX_BUILD_FLAGS

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    listed = re.search(r"^LLAMA_AMX_FLAGS := (.+)$", makefile, re.MULTILINE)
    assert listed and set(listed.group(1).split()) == AMX_BUILD_FLAGS


def test_doctor_fails_on_a_llama_build_for_another_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """doctor's verdict includes the build check, and its text names the problem."""
    from appliance.commands import doctor
    from appliance.inference.backends import llamacpp

    wrong = llamacpp.check_build(llamacpp.build_features(SYSTEM_INFO_AMX), AVX2_FLAGS)
    monkeypatch.setattr(llamacpp, "build_report", lambda flags: wrong)  # an AMX build on an older CPU
    from appliance.container import Container
    from appliance.settings import load_settings

    checks = doctor.collect(Container(load_settings(data_dir=tmp_path)))
    assert checks["llama_cpp"] == wrong and checks["ok"] is False
    text = doctor.human(checks)
    assert "llama.cpp build: FAIL" in text and "LLAMA_CPU=avx2" in text
