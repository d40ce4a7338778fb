"""Run every benchmark and write one dated results file, its markdown table and plots.

`make bench` runs this; `make bench-quick` runs it with ``--quick`` (smaller sizes, fewer repeats;
under 10 minutes on an idle 2-core host). Each script runs in its own process (a crash or a
leaked thread cannot spoil the next), writes its JSON part to bench/results/parts/, and a script
that fails is recorded as such while the others go on. Then bench/report.py builds the figures and
bench/render.py writes bench/results/<date>-<host>[-quick].json, .md, the plots, latest.json, and
the README's and docs/benchmarks.md's generated sections.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import PARTS, fits_in_memory, machine_info, read_json, write_json  # noqa: E402

# name: (full arguments, quick arguments); None: not run in that mode.
STEPS: dict[str, tuple[list[str] | None, list[str] | None]] = {
    "security": ([], []),
    "skeleton": ([], None),
    "retrieval": (
        ["--sizes", "1000,10000,100000"],
        # 100k is the goal's size: its index build is most of this step (~3 min on an idle host).
        ["--sizes", "1000,10000,100000", "--queries", "100", "--local-sizes", "1000"]
        + ["--local-queries", "10", "--embed-chunks", "32"],
    ),
    "retrieval_1m": (
        ["--sizes", "1000000", "--local-sizes", "", "--queries", "200", "--embed-chunks", "0"],
        None,
    ),  # fmt: skip
    "ingest": (
        [],
        ["--docs", "2", "--repeat", "2", "--pydoc-files", "6", "--zh-docs", "3", "--scale", "1000"],
    ),
    "profile_ingest": ([], ["--pydoc-files", "6", "--zh-docs", "3", "--quick"]),
    "quality": ([], []),
    "answers": ([], ["--sample", "4"]),
    "serving": (
        [],
        ["--runs", "4", "--whole-runs", "0", "--concurrency", "1", "--requests-per-client", "1"],
    ),
    "serve_load": ([], ["--per-user", "1", "--idle-s", "5"]),
}
SCRIPT = {"retrieval_1m": "retrieval"}
OUT_FLAG = {"quality": "--json"}  # bench/quality.py names its output option so
# What one 1M-chunk collection holds in the bench process and the shard: 384 float32 + the text and
# payload + the Chunk objects the script builds up front, with the HNSW graph (measured at 100k).
BYTES_PER_CHUNK_1M = 6_000


def run_step(name: str, args: list[str], log_dir: Path) -> dict[str, Any]:
    out = PARTS / f"{name}.json"
    out.unlink(missing_ok=True)
    script = ROOT / "bench" / f"{SCRIPT.get(name, name)}.py"
    argv = [sys.executable, str(script), *args, OUT_FLAG.get(name, "--out"), str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    print(f"== {name}: {' '.join(argv[1:])}", flush=True)
    t = time.perf_counter()
    with (log_dir / f"{name}.log").open("w") as log:
        done = subprocess.run(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    elapsed = time.perf_counter() - t
    print(f"   {name}: exit {done.returncode} in {elapsed:.0f} s", flush=True)
    if done.returncode or not out.exists():
        tail = (log_dir / f"{name}.log").read_text(errors="replace").strip().splitlines()[-3:]
        return {"error": f"exit {done.returncode}: {' | '.join(tail)[-400:]}", "seconds": elapsed}
    part = read_json(out)
    part["seconds"] = round(elapsed, 1)
    write_json(out, part)
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="+", choices=list(STEPS), help="run these steps only")
    parser.add_argument(
        "--reuse-parts",
        action="store_true",
        help="with --only: take the other steps' figures from their last parts (a failed step re-run)",
    )
    parser.add_argument("--no-docs", action="store_true", help="leave README and docs alone")
    parser.add_argument("--note", default="", help="recorded in the results, e.g. what the host ran")
    args = parser.parse_args()
    from bench.render import write_run
    from bench.report import build

    machine = machine_info()
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    mode = "quick" if args.quick else "full"
    started = dt.datetime.now(dt.UTC)
    stem = f"{started:%Y-%m-%d}-{machine['host']}" + ("-quick" if args.quick else "")
    log_dir = PARTS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    parts: dict[str, Any] = {}
    t0 = time.perf_counter()
    for name, (full, quick) in STEPS.items():
        step_args = quick if args.quick else full
        # Reused: also a step the mode does not run (the 1M step of `make bench` in a quick run).
        reuse = args.only and name not in args.only and args.reuse_parts
        if reuse and (PARTS / f"{name}.json").exists():
            parts[name] = {**read_json(PARTS / f"{name}.json"), "reused_part": True}
            continue
        if step_args is None:
            parts[name] = {"skipped": f"not run in a {mode} run (`make bench` runs it)"}
            continue
        if args.only and name not in args.only:
            continue
        if name == "retrieval_1m":
            fits, why = fits_in_memory(1_000_000 * BYTES_PER_CHUNK_1M)
            if not fits:
                parts[name] = {"skipped": f"1M chunks not run: {why}"}
                continue
        parts[name] = run_step(name, step_args, log_dir)
    meta = {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "commit": commit,
        "host": machine["host"],
        "mode": mode,
        "machine": machine,
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        "duration_s": round(time.perf_counter() - t0),
        "steps_s": {n: p.get("seconds") for n, p in parts.items()},
        "steps_reused": [n for n, p in parts.items() if p.get("reused_part")],
        "note": args.note,
    }
    results = build(parts, meta)
    write_json(PARTS / "all.json", parts)
    path = write_run(results, stem, docs=not args.no_docs)
    print(f"wrote {path} and {path.with_suffix('.md')}; latest.json points at it")
    for name, f in results["figures"].items():
        flag = {True: "met", False: "MISSED", None: ""}[f["met"]]
        print(f"  {name:34} {f['value']!s:>10} {f['unit']:9} {f['goal'] or '':8} {flag}")


if __name__ == "__main__":
    main()
