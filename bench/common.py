"""What every bench script shares: the machine it ran on, where results go, percentiles, plots.

Each script writes one JSON "part" (``--out``, by default ``bench/results/parts/<name>.json``, not
committed); ``bench/run.py`` runs them all and ``bench/report.py`` turns the parts into the dated
results file, its markdown table and plots, and ``latest.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import socket
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PARTS = RESULTS / "parts"

# The CPU features that change which kernels torch (oneDNN) and llama.cpp (ggml) run.
FLAGS_THAT_MATTER = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def add_out_arg(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--out", type=Path, default=PARTS / f"{name}.json", help="JSON file to write")


def write_json(path: Path, data: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block describes them all on this kind of VM
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def _memory_bytes() -> tuple[int, int]:
    """Total and available memory (bytes), from /proc/meminfo."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values.get("MemTotal", 0), values.get("MemAvailable", 0)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures across machines: CPU model and the flags that pick
    kernels, cores, memory, the load when measured, and the versions of the compute libraries."""
    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    total, available = _memory_bytes()
    return {
        "host": socket.gethostname(),
        "cpu_model": cpu.get("model name") or platform.processor() or platform.machine(),
        "flags": {flag: flag in flags for flag in FLAGS_THAT_MATTER},
        "cores": os.cpu_count(),
        "memory_gb": round(total / 2**30, 1),
        "memory_available_gb": round(available / 2**30, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {
            d: _version(d) for d in ("torch", "llama_cpp_python", "qdrant-edge-py", "sentence-transformers")
        },
        "llama_cpu_build": _llama_build(),
    }


def _llama_build() -> str | None:
    """Which CPU kernels the installed llama.cpp was built with (the Makefile's LLAMA_CPU)."""
    try:
        from llama_cpp import llama_cpp as lib

        info = lib.llama_print_system_info().decode()
    except Exception:  # the bench runs without llama.cpp too (security, retrieval)
        return None
    return "amx" if "AMX_INT8 = 1" in info else "avx2" if "AVX2 = 1" in info else info[:80]


def fits_in_memory(needed_bytes: int, headroom: float = 0.5) -> tuple[bool, str]:
    """Whether a data set of ``needed_bytes`` fits in what is available now, keeping ``headroom`` of
    it free for the other processes on the host; the reason, either way."""
    _, available = _memory_bytes()
    allowed = available * (1 - headroom)
    verdict = needed_bytes <= allowed
    return verdict, (
        f"needs ~{needed_bytes / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available "
        f"({'fits' if verdict else 'over'} the {int((1 - headroom) * 100)}% the bench allows itself)"
    )


def pct(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between samples; NaN for no samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def rss_mb(pid: int) -> float:
    """Resident memory of one process, MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc (children lists)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                continue
    return out


def plot_lines(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    logx: bool = False,
    logy: bool = False,
    goal: float | None = None,
    note: str = "",
) -> Path:
    """One line per series, markers on measured points; an optional dashed goal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    if goal is not None:
        ax.axhline(goal, linestyle="--", color="grey", label=f"goal {goal:g}")
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="grey")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_bars(
    path: Path,
    title: str,
    ylabel: str,
    groups: dict[str, dict[str, float]],
    note: str = "",
    logy: bool = False,
) -> Path:
    """Grouped bars: one group per key of ``groups``, one bar per side within it (none where a side
    did not run). ``logy``: a log scale, so groups seconds apart and minutes apart both read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = sorted({s for g in groups.values() for s in g}, key=lambda s: (s != "ours", s))
    width = 0.8 / max(1, len(sides))
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for i, side in enumerate(sides):
        xs = [g + (i - (len(sides) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [groups[k].get(side, math.nan) for k in groups], width, label=side)
    if logy:
        ax.set_yscale("log")
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7, color="grey")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
