"""Walking-skeleton figures: ingest throughput and ask latency, on the real components.

Prints a table and writes its JSON part (bench/common.py). Run with `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.egress import install_guard, prepare_offline_env  # noqa: E402
from bench.common import add_out_arg, write_json  # noqa: E402

WORDS = [
    "turbine",
    "gearbox",
    "warranty",
    "maintenance",
    "blade",
    "bearing",
    "generator",
    "inspection",
    "safety",
    "policy",
    "employee",
    "vacation",
    "approval",
    "expense",
    "budget",
    "contract",
    "supplier",
    "invoice",
    "schedule",
    "report",
    "quarter",
    "energy",
    "grid",
    "voltage",
    "transformer",
    "substation",
    "outage",
    "crew",
    "training",
    "certificate",
    "audit",
    "compliance",
    "regulation",
]


def synthetic_corpus(root: Path, docs: int = 20, sections: int = 8, seed: int = 7) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        parts = [f"# Document {d}\n"]
        for s in range(sections):
            parts.append(f"\n## Section {s}\n")
            for _ in range(3):
                sentence_count = rng.randint(4, 7)
                para = " ".join(
                    " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."
                    for _ in range(sentence_count)
                )
                parts.append(para + "\n")
        (root / f"doc{d:03}.md").write_text("\n".join(parts))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--modes", default="extractive,grounded", help="Answer modes to time, comma-separated."
    )
    add_out_arg(parser, "skeleton")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    prepare_offline_env()
    install_guard()
    import connectors
    from appliance.container import Container
    from appliance.domain import LOCAL_ADMIN
    from appliance.settings import load_settings
    from tests.fixtures.corpus import QUESTIONS, make_corpus

    results: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        settings = load_settings(data_dir=tmpdir / "data")
        container = Container(settings)
        try:
            container.embedder.start()
            container.parser.start()
            if modes != ["extractive"]:
                container.pool.start()  # extractive answers need no model
            fixtures = make_corpus(tmpdir / "fixtures")
            started = time.perf_counter()
            rep = container.ingestion.ingest(
                connectors.for_source(str(fixtures), extensions=settings.ingestion.extensions), "default"
            )
            results["fixture_docs"] = rep.added
            results["fixture_chunks"] = rep.chunks
            results["fixture_ingest_s"] = round(time.perf_counter() - started, 2)
            results["fixture_chunks_per_s"] = round(rep.chunks / (time.perf_counter() - started), 2)

            synth = synthetic_corpus(tmpdir / "synth")
            started = time.perf_counter()
            rep = container.ingestion.ingest(connectors.for_source(str(synth)), "bench")
            elapsed = time.perf_counter() - started
            results["synthetic_docs"] = rep.added
            results["synthetic_chunks"] = rep.chunks
            results["synthetic_chunks_per_s"] = round(rep.chunks / elapsed, 2)
            results["synthetic_docs_per_s"] = round(rep.added / elapsed, 2)

            # The default mode (extractive: no model) and grounded (the model writes, the sources
            # gate what it says).
            for mode in modes:
                retrieval, ttft, total, prompt = [], [], [], []
                for _ in range(3):
                    for question, _doc, _ in QUESTIONS:
                        r = asyncio.run(container.rag.ask(question, LOCAL_ADMIN, mode=mode))
                        retrieval.append(r.timings["retrieval_ms"])
                        ttft.append(r.timings["ttft_ms"])
                        total.append(r.timings["total_ms"])
                        prompt.append(r.usage.get("prompt_tokens", 0))
                results[f"ask_{mode}_retrieval_ms_p50"] = round(statistics.median(retrieval), 1)
                results[f"ask_{mode}_ttft_ms_p50"] = round(statistics.median(ttft), 1)
                results[f"ask_{mode}_total_ms_p50"] = round(statistics.median(total), 1)
                results[f"ask_{mode}_prompt_tokens_p50"] = statistics.median(prompt)
        finally:
            container.close()

    width = max(len(k) for k in results)
    print(f"{'figure':{width}}  value")
    for key, value in results.items():
        print(f"{key:{width}}  {value}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
