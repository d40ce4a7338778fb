"""Accelerator detection: one pure probe per platform, each saying what it found and why.

Every probe takes its inputs injectable (a command runner, a file reader, an importer), so tests
feed recorded outputs of the real tools (nvidia-smi, amd-smi, rocm-smi, npu-smi, /proc) and the
probes never need the hardware. ``probe_all()`` runs them all; ``doctor`` prints every verdict.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Platform = Literal["cuda", "rocm", "ascend", "mps", "cpu"]

# run(argv) -> stdout, or None when the tool is absent or fails.
Runner = Callable[[list[str]], "str | None"]
# read(path) -> text, or None when the file is absent.
Reader = Callable[[str], "str | None"]
Importer = Callable[[str], Any]

MIB = 2**20


@dataclass(frozen=True)
class Device:
    platform: Platform
    index: int
    name: str
    memory_bytes: int
    free_bytes: int | None = None


@dataclass
class ProbeResult:
    platform: Platform
    found: bool
    reason: str
    devices: list[Device] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_command(argv: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def read_file(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


# -- NVIDIA ---------------------------------------------------------------------------------------

NVIDIA_SMI = [
    "nvidia-smi",
    "--query-gpu=index,name,memory.total,memory.free",
    "--format=csv,noheader,nounits",
]


def probe_nvidia(run: Runner = run_command, importer: Importer = importlib.import_module) -> ProbeResult:
    try:
        nvml = importer("pynvml")
        nvml.nvmlInit()
        try:
            devices = []
            for i in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                name = nvml.nvmlDeviceGetName(handle)
                mem = nvml.nvmlDeviceGetMemoryInfo(handle)
                devices.append(
                    Device(
                        "cuda",
                        i,
                        name.decode() if isinstance(name, bytes) else str(name),
                        mem.total,
                        mem.free,
                    )
                )
        finally:
            nvml.nvmlShutdown()
        if devices:
            return ProbeResult("cuda", True, f"NVML reports {len(devices)} GPU(s)", devices)
    except Exception:  # noqa: BLE001 - absent library or driver: fall through to nvidia-smi
        pass
    out = run(NVIDIA_SMI)
    if out is None:
        return ProbeResult("cuda", False, "no NVML library and nvidia-smi is absent or failed")
    devices = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            devices.append(
                Device(
                    "cuda", int(parts[0]), parts[1], int(float(parts[2])) * MIB, int(float(parts[3])) * MIB
                )
            )
        except ValueError:
            continue
    if not devices:
        return ProbeResult("cuda", False, "nvidia-smi listed no GPUs")
    return ProbeResult("cuda", True, f"nvidia-smi lists {len(devices)} GPU(s)", devices)


# -- AMD ------------------------------------------------------------------------------------------


def _parse_amd_smi(out: str) -> list[Device]:
    data = json.loads(out)
    items = data if isinstance(data, list) else data.get("gpu_data", [data])
    devices = []
    for i, item in enumerate(items):
        vram = item.get("vram") or item.get("mem_usage") or {}
        total = vram.get("total_vram") or vram.get("total") or vram.get("size") or {}
        value = total.get("value") if isinstance(total, dict) else total
        unit = (total.get("unit") if isinstance(total, dict) else "MB") or "MB"
        scale = {"B": 1, "KB": 2**10, "MB": MIB, "GB": 2**30}.get(str(unit).upper(), MIB)
        name = (item.get("asic") or {}).get("market_name") or item.get("name") or "AMD GPU"
        devices.append(Device("rocm", int(item.get("gpu", i)), str(name), int(float(value or 0) * scale)))
    return devices


def _parse_rocm_smi(out: str) -> list[Device]:
    data = json.loads(out)
    devices = []
    for key, card in data.items():
        if not key.startswith("card"):
            continue
        total = card.get("VRAM Total Memory (B)")
        used = card.get("VRAM Total Used Memory (B)")
        name = card.get("Card Series") or card.get("Card series") or card.get("Card SKU") or "AMD GPU"
        if total is None:
            continue
        free = int(total) - int(used) if used is not None else None
        devices.append(Device("rocm", int(key[4:] or 0), str(name), int(total), free))
    return devices


def probe_amd(run: Runner = run_command) -> ProbeResult:
    tried = []
    for argv, parse in (
        (["amd-smi", "static", "--json"], _parse_amd_smi),
        (["rocm-smi", "--showmeminfo", "vram", "--showproductname", "--json"], _parse_rocm_smi),
    ):
        out = run(argv)
        if out is None:
            tried.append(f"{argv[0]} absent or failed")
            continue
        try:
            devices = parse(out)
        except (ValueError, AttributeError, TypeError) as exc:
            tried.append(f"{argv[0]} output unreadable ({exc})")
            continue
        if devices:
            return ProbeResult("rocm", True, f"{argv[0]} lists {len(devices)} GPU(s)", devices)
        tried.append(f"{argv[0]} listed no GPUs")
    return ProbeResult("rocm", False, "; ".join(tried))


# -- Huawei Ascend --------------------------------------------------------------------------------

# npu-smi info prints a box table; a device's first row is "| 0   910B3 | OK | ...", the second
# row ends with "HBM-Usage(MB)" values like "3400 / 65536".
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([\w.-]+)\s*\|\s*\w+")
_NPU_HBM = re.compile(r"(\d+)\s*/\s*(\d+)\s*\|?\s*$")


def _parse_npu_smi(out: str) -> list[Device]:
    devices: list[Device] = []
    pending: tuple[int, str] | None = None
    for line in out.splitlines():
        row = _NPU_ROW.match(line)
        if row and pending is None:
            pending = (int(row.group(1)), row.group(2))
            continue
        if pending is not None:
            hbm = _NPU_HBM.search(line.strip())
            if hbm:
                used, total = int(hbm.group(1)), int(hbm.group(2))
                devices.append(
                    Device("ascend", pending[0], f"Ascend {pending[1]}", total * MIB, (total - used) * MIB)
                )
                pending = None
    return devices


def probe_ascend(run: Runner = run_command, importer: Importer = importlib.import_module) -> ProbeResult:
    out = run(["npu-smi", "info"])
    if out is not None:
        devices = _parse_npu_smi(out)
        if devices:
            return ProbeResult("ascend", True, f"npu-smi lists {len(devices)} NPU(s)", devices)
        reason = "npu-smi listed no NPUs"
    else:
        reason = "npu-smi absent or failed"
    try:
        torch_npu = importer("torch_npu")
        count = int(torch_npu.npu.device_count())
    except Exception:  # noqa: BLE001 - torch_npu missing or no driver
        return ProbeResult("ascend", False, f"{reason}; torch_npu not importable")
    if count == 0:
        return ProbeResult("ascend", False, f"{reason}; torch_npu sees no devices")
    devices = []
    for i in range(count):
        props = torch_npu.npu.get_device_properties(i)
        devices.append(Device("ascend", i, str(props.name), int(props.total_memory)))
    return ProbeResult("ascend", True, f"torch_npu sees {count} NPU(s)", devices)


# -- Apple ----------------------------------------------------------------------------------------


def probe_apple(
    system: str | None = None,
    machine: str | None = None,
    memory_bytes: int | None = None,
    importer: Importer = importlib.import_module,
) -> ProbeResult:
    system = system or platform.system()
    machine = machine or platform.machine()
    if system != "Darwin":
        return ProbeResult("mps", False, f"not macOS ({system})")
    if machine != "arm64":
        return ProbeResult("mps", False, f"Intel Mac ({machine}): no Metal GPU worth offloading to")
    try:
        torch = importer("torch")
        available = bool(torch.backends.mps.is_available())
    except Exception:  # noqa: BLE001 - torch absent: Apple silicon has Metal anyway
        available = True
    if not available:
        return ProbeResult("mps", False, "Apple silicon, but torch reports MPS unavailable")
    # Unified memory: the GPU shares RAM; Metal lets it wire about three quarters of it.
    usable = int((memory_bytes or 0) * 0.75)
    return ProbeResult("mps", True, "Apple silicon with Metal", [Device("mps", 0, "Apple GPU", usable)])


# -- CPU ------------------------------------------------------------------------------------------

ISA_FLAGS = {
    "avx2": "AVX2",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX-512 VNNI",
    "avx_vnni": "AVX-VNNI",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
    "f16c": "F16C",
    "fma": "FMA",
    "asimd": "NEON",
    "asimddp": "NEON dot-product",
    "sve": "SVE",
}


def _meminfo_bytes(text: str | None, key: str) -> int | None:
    for line in (text or "").splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


def _cpuinfo(read: Reader) -> tuple[set[str], str | None]:
    """The first CPU's feature flags (x86 ``flags``, Arm ``Features``) and model name."""
    flags: set[str] = set()
    model = None
    for line in (read("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key == "model name" and value.strip() and model is None:
            model = value.strip()
    return flags, model


def cpu_flags(read: Reader = read_file) -> set[str]:
    return _cpuinfo(read)[0]


def probe_cpu(read: Reader = read_file, cpu_count: int | None = None) -> ProbeResult:
    flags, name = _cpuinfo(read)
    model = name or platform.processor() or platform.machine()
    meminfo = read("/proc/meminfo")
    total = _meminfo_bytes(meminfo, "MemTotal") or 0
    available = _meminfo_bytes(meminfo, "MemAvailable")
    cores = cpu_count or os.cpu_count() or 1
    isa = [label for flag, label in ISA_FLAGS.items() if flag in flags]
    device = Device("cpu", 0, model, total, available)
    reason = f"{cores} logical cores, {total / 2**30:.1f} GiB RAM, ISA: {', '.join(isa) or 'baseline'}"
    return ProbeResult("cpu", True, reason, [device], {"cores": cores, "isa": isa})


def probe_all() -> list[ProbeResult]:
    """Every platform's verdict, accelerators first; the CPU probe always finds something."""
    memory = _meminfo_bytes(read_file("/proc/meminfo"), "MemTotal")
    if memory is None and platform.system() == "Darwin":
        out = run_command(["sysctl", "-n", "hw.memsize"])
        memory = int(out) if out and out.strip().isdigit() else None
    return [probe_nvidia(), probe_amd(), probe_ascend(), probe_apple(memory_bytes=memory), probe_cpu()]
