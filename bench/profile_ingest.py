"""Where the time of a whole `appliance ingest` goes, as a new user runs it, on text-heavy corpora.

For each corpus (python3-doc's HTML pages; Chinese plain text) it runs, in a fresh data dir:
1. `appliance ingest EMPTY_FOLDER --json`: start-up and shut-down alone (wall time);
2. `appliance ingest CORPUS --json` under py-spy (``record --subprocesses``, active threads only),
   and sorts the CPU samples of every process into stages by the frames on their stacks:
   start-up (imports, model loading), parsing (unstructured, spaCy, the parser pool), chunking,
   embedding (sentence-transformers, torch), writes (Qdrant Edge, the ledger, SQLite, audit),
   other. The wall time of an unprofiled run of the same corpus is measured too, since sampling
   slows the process a little.
CPU seconds can exceed wall seconds: parsing runs in its own process beside embedding.

Writes its JSON part (see bench/common.py); the collapsed stacks go to bench/results/profiles/
(not committed). `make bench` runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import corpora  # noqa: E402
from bench.common import RESULTS, add_out_arg, machine_info, write_json  # noqa: E402

PY_SPY = Path(sys.executable).with_name("py-spy")
# First match wins, so the order matters: loading a model inside an embedding call is start-up.
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("start-up: imports", ("_find_and_load",)),
    (
        "start-up: models",
        ("from_pretrained", "_load_sbert_model", "spacy/__init__.py", "load_model", "check_dtype"),
    ),
    ("embedding", ("sentence_transformers", "torch/", "transformers/", "embed_documents", "embeddings/")),
    (
        "parsing",
        ("unstructured", "spacy", "thinc", "ingestion/parsing", "ingestion/formats", "magic", "lxml", "bs4"),
    ),
    ("chunking", ("chunking", "tokenizers")),
    ("writes", ("vectorstore", "qdrant_edge", "sqlalchemy", "ledger", "sqlite", "audit", "commit")),
]


# Libraries whose import shows in start-up; an import stack is charged to the deepest one on it.
HEAVY = ("spacy", "thinc", "torch", "transformers", "sentence_transformers", "unstructured", "nltk",
         "pandas", "numpy", "scipy", "sklearn", "onnxruntime", "qdrant_edge", "sqlalchemy", "pydantic",
         "lxml", "pdfminer", "cv2", "PIL", "llama_cpp", "fastapi", "gradio")  # fmt: skip


def imported_library(stack: str) -> str:
    found = "other"
    for frame in stack.split(";"):
        if frame.startswith("<module> ("):
            top = frame[len("<module> (") :].split("/", 1)[0]
            if top in HEAVY:
                found = top
    return found


def stage_of(stack: str) -> str:
    if all(frame.startswith("process ") for frame in stack.split(";")):
        return "native threads"  # no Python frame: torch's or llama.cpp's own threads
    for stage, needles in STAGES:
        if any(n in stack for n in needles):
            return stage
    return "other"


def classify(raw: Path, rate: int) -> dict[str, Any]:
    """CPU seconds per stage and per process kind from py-spy's collapsed stacks."""
    stages: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    imports: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        stage = stage_of(stack)
        stages[stage] += n
        if stage == "start-up: imports":
            imports[imported_library(stack)] += n
        head = stack.split(";", 1)[0]
        processes["parser" if "multiprocessing" in head or "spawn_main" in stack else "main"] += n
    return {
        "cpu_s": {k: round(v / rate, 2) for k, v in stages.most_common()},
        "cpu_s_by_process": {k: round(v / rate, 2) for k, v in processes.most_common()},
        "import_cpu_s_by_library": {k: round(v / rate, 2) for k, v in imports.most_common(6)},
    }


def ingest(folder: Path, data_dir: Path, profile: Path | None, rate: int) -> tuple[float, dict[str, Any]]:
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(data_dir),
        "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    argv = [sys.executable, "-m", "appliance", "ingest", str(folder), "--json"]
    if profile is not None:
        argv = [str(PY_SPY), "record", "-f", "raw", "-r", str(rate), "-s", "--nonblocking", "-o", str(profile), "--", *argv]  # fmt: skip
    t = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=data_dir.parent)
    elapsed = time.perf_counter() - t
    if done.returncode:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed: {done.stderr[-800:]}")
    # py-spy writes its own lines to the same stdout: take the JSON document alone.
    start = done.stdout.find("{")
    return elapsed, json.JSONDecoder().raw_decode(done.stdout[start:])[0] if start >= 0 else {}


def profile_corpus(name: str, folder: Path, work: Path, rate: int, quick: bool) -> dict[str, Any]:
    empty = work / "empty"
    empty.mkdir(exist_ok=True)
    (work / name).mkdir()
    startup_s, _ = ingest(empty, work / name / "d0", None, rate)
    out = RESULTS / "profiles" / f"ingest-{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    profiled_s, summary = ingest(folder, work / name / "d2", out, rate)
    wall_s = profiled_s if quick else ingest(folder, work / name / "d1", None, rate)[0]
    row = {
        "corpus": name,
        "files": len(list(folder.iterdir())),
        "mb": round(corpora.folder_mb(folder), 3),
        "chunks": summary.get("chunks"),
        "wall_s": round(wall_s, 2),
        "startup_wall_s": round(startup_s, 2),
        "profiled_wall_s": round(profiled_s, 2),
        "chunks_per_s_after_startup": round((summary.get("chunks") or 0) / max(0.01, wall_s - startup_s), 1),
        **classify(out, rate),
        "collapsed_stacks": str(out.relative_to(ROOT)),
    }
    print(f"  {name}: {row}", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pydoc-files", type=int, default=40)
    parser.add_argument("--zh-docs", type=int, default=5, help="Chinese reports of ~40 KB")
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--quick", action="store_true", help="wall time from the profiled run")
    add_out_arg(parser, "profile_ingest")
    args = parser.parse_args()
    if not PY_SPY.exists():
        sys.exit(f"py-spy not found beside {sys.executable}: pip install 'kb-appliance[bench]'")
    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    rows = []
    try:
        if pages := corpora.pydoc_files(args.pydoc_files):
            folder = corpora.copy_variant(pages, work / "c-pydoc", 0)
            rows.append(profile_corpus("pydoc", folder, work, args.rate, args.quick))
        if zh := corpora.chinese_corpus(work / "c-zh", 0, args.zh_docs):
            rows.append(profile_corpus("zh", zh, work, args.rate, args.quick))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_json(args.out, {"machine": machine_info(), "rate": args.rate, "corpora": rows})
    for r in rows:
        print(
            f"{r['corpus']}: {r['files']} files, {r['chunks']} chunks, wall {r['wall_s']} s (start-up {r['startup_wall_s']} s)"
        )
        for stage, sec in r["cpu_s"].items():
            print(f"  {stage:20} {sec:8.2f} CPU s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
