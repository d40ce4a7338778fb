"""Retrieval side by side on the labelled set (tests/fixtures/kb, qa.jsonl): ours on the Qdrant
Edge shard, ours on qdrant-client's local mode, and the LangChain and LlamaIndex pipelines'
retrievers, each over the documents it ingested itself. Per side: hit@1 and hit@k by document (a
hit: a result from the labelled file) and the latency of one search, query embedding included.

Called by bench/ingest.py, which has the baselines loaded already.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, median, pct

KB = ROOT / "tests" / "fixtures" / "kb"


def questions() -> list[dict[str, Any]]:
    lines = (KB / "qa.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines if x.strip()]


def score(search: Any, items: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """``search(question, k)`` returns file names, best first."""
    hit1 = hitk = 0
    times = []
    search(items[0]["question"], k)  # warm-up: first-call costs are not retrieval
    for item in items:
        t = time.perf_counter()
        names = search(item["question"], k)
        times.append((time.perf_counter() - t) * 1000)
        doc = item["doc"].lower()
        hit1 += bool(names) and doc in names[0].lower()
        hitk += any(doc in n.lower() for n in names)
    n = len(items)
    return {
        "hit_at_1": round(hit1 / n, 3),
        f"hit_at_{k}": round(hitk / n, 3),
        "p50_ms": round(median(times), 2),
        "p95_ms": round(pct(times, 95), 2),
        "questions": n,
    }


def ours(container: Any, docs: Path, collection: str) -> Any:
    import connectors
    from appliance.domain import LOCAL_ADMIN

    connector = connectors.for_source(str(docs), extensions=container.settings.ingestion.extensions)
    summary = container.jobs.run([connector], collection, [], "bench")
    assert not summary["failed"], summary["failed"]

    def search(question: str, k: int) -> list[str]:
        hits, _ = container.retriever.search(question, LOCAL_ADMIN, collection, k)
        return [Path(h.chunk.uri).name for h in hits]

    return search


def compare(container: Any, work: Path, sides: dict[str, Any], k: int = 5) -> dict[str, Any]:
    """Every side's figures on the labelled set; ``sides`` are bench/baselines.py pipelines."""
    from appliance.container import Container
    from appliance.settings import load_settings

    # The documents only: the baselines' loaders would index the questions file too.
    docs = work / "kb"
    docs.mkdir(parents=True, exist_ok=True)
    for path in KB.iterdir():
        if path.is_file() and path.name != "qa.jsonl":
            shutil.copyfile(path, docs / path.name)
    items = questions()
    out = {"ours_edge": score(ours(container, docs, "kbside"), items, k)}
    local = Container(load_settings(data_dir=work / "data-local", vectorstore={"backend": "qdrant"}))
    try:
        local.embedder.start()
        local.parser.start()
        out["ours_qdrant_local"] = score(ours(local, docs, "kbside"), items, k)
    finally:
        local.close()
    for name, side in sides.items():
        side.ingest(docs)
        out[name] = score(side.search, items, k)
    return out
