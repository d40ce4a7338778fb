"""Retrieval figures: search latency by store and size, and embedding throughput by backend.

- Search: p50/p95 of one hybrid search (dense + BM25, RRF, per-document cap, k=5) at 10k and 100k
  chunks, without and with an access filter (and with the hits' vectors, as answers ask), on the
  Qdrant Edge shard and on qdrant-client's local mode. Vectors are random (384-d, the embedder's size), texts are real-ish: words drawn from the
  labelled set. Local mode keeps every point in Python and scores sparse vectors in a Python loop
  (hundreds of ms per query at 2k chunks), so it is measured at ``--local-sizes`` (2k) only: it
  is the test stand-in, not a production store.
- Embedding: chunks/s of 256-token chunks for torch fp32, ONNX fp32 and ONNX int8, at 1 and 2
  threads, in one run.

Prints a table and writes its JSON part (bench/common.py). Run with `make bench`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.egress import install_guard, prepare_offline_env  # noqa: E402
from bench.common import PARTS, machine_info, rss_mb  # noqa: E402

KB = ROOT / "tests" / "fixtures" / "kb"
DIM = 384
GROUPS = [f"group:g{i}" for i in range(10)]


def vocabulary() -> list[str]:
    words = []
    for path in sorted(KB.iterdir()):
        if path.suffix in (".md", ".txt", ".html"):
            words.extend(w.strip(".,:;()<>\"'") for w in path.read_text().split())
    return [w for w in words if w and "<" not in w and ">" not in w]


def make_chunks(
    n: int, words: list[str], rng: np.random.Generator, start: int = 0
) -> tuple[list[Any], np.ndarray]:
    """Chunks ``start`` .. ``start + n`` of the synthetic collection and their unit vectors."""
    from appliance.domain import EVERYONE, Chunk

    chunks = []
    for i in range(start, start + n):
        doc = f"00000000-0000-4000-8000-{i // 10:012d}"
        text = " ".join(rng.choice(words, int(rng.integers(40, 120))))
        # A third readable by everyone, the rest by one of ten groups.
        acl = (EVERYONE,) if i % 3 == 0 else (GROUPS[i % len(GROUPS)],)
        chunks.append(
            Chunk(
                id=f"{i:08d}-0000-4000-8000-000000000000",
                document_id=doc,
                collection="bench",
                uri=f"file:///bench/doc{i // 10}.md",
                title=f"doc{i // 10}",
                text=text,
                index=i % 10,
                acl=acl,
                source="file:///bench",
                modified=1.7e9 + i,
            )
        )
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return chunks, vectors


def rss_now_mb() -> float:
    return round(rss_mb(os.getpid()), 1)


def rss_peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.array(values), p))


def bench_store(kind: str, n: int, queries: int, progress: Path | None = None) -> list[dict]:
    """Load ``n`` synthetic chunks into a fresh store batch by batch (generated as they go: the
    bench holds one batch, not the collection), build the index, time searches. RSS of this process
    (the Edge shard lives in it) after loading and after searching; the peak of the index build's
    child process. With ``progress``, each stage's figures are written there as they come (a run
    stopped for time or memory leaves what it measured)."""
    from appliance.vectorstore.base import SearchFilter
    from appliance.vectorstore.edge import EdgeVectorStore
    from appliance.vectorstore.hybrid import FusionConfig
    from appliance.vectorstore.server import QdrantServerStore

    rng = np.random.default_rng(n)
    words = vocabulary()
    fusion = FusionConfig(prefetch=30, max_per_document=2)
    with tempfile.TemporaryDirectory() as tmp:
        store: Any = (
            EdgeVectorStore(Path(tmp), fusion)
            if kind == "edge"
            else QdrantServerStore(None, path=Path(tmp), fusion=fusion)
        )
        mark: dict[str, Any] = {"store": kind, "chunks": n, "rss_mb_before": rss_now_mb()}

        def note(**figures: Any) -> None:
            mark.update(figures)
            print(f"  {kind} {n}: {figures}", file=sys.stderr, flush=True)
            if progress:
                progress.write_text(json.dumps(mark, indent=2) + "\n")

        gen = np.random.default_rng(n + 1)
        started = time.perf_counter()
        store.ensure_collection("bench", DIM)
        for start in range(0, n, 1000):
            chunks, vectors = make_chunks(min(1000, n - start), words, gen, start)
            store.upsert("bench", chunks, vectors)
            if (start + 1000) % 100_000 == 0 and start + 1000 < n:
                point = {"loaded": start + 1000, "load_s": round(time.perf_counter() - started, 1)}
                mark.setdefault("load_points", []).append({**point, "rss_mb": rss_now_mb()})
                note(**point)
        store.flush("bench")
        load_s = time.perf_counter() - started
        note(loaded=n, load_s=round(load_s, 1), rss_mb_loaded=rss_now_mb())
        optimize_s = 0.0
        if kind == "edge":
            # Build the HNSW index, as ingestion does at the end of a run (Edge has no background
            # optimiser; it builds in a child process).
            started = time.perf_counter()
            store.optimize("bench")
            optimize_s = time.perf_counter() - started
            note(optimize_s=round(optimize_s, 1), build_peak_rss_mb=rss_peak_mb(resource.RUSAGE_CHILDREN))
        rows = []
        acl = SearchFilter(acl_any=("*", "user:bench", GROUPS[1]))
        # "+vec": the hits with their stored vectors, as an answer's relevance check asks for them.
        for label, flt, with_vectors in (("none", None, False), ("acl", acl, False), ("acl+vec", acl, True)):
            times = []
            for _ in range(queries):
                vec = rng.normal(size=DIM).astype(np.float32)
                text = " ".join(rng.choice(words, 4))
                t = time.perf_counter()
                store.search("bench", vec / np.linalg.norm(vec), text, flt, 5, with_vectors=with_vectors)
                times.append((time.perf_counter() - t) * 1000)
            rows.append(
                {
                    "store": kind,
                    "chunks": n,
                    "filter": label,
                    "p50_ms": round(percentile(times, 50), 2),
                    "p95_ms": round(percentile(times, 95), 2),
                    "load_s": round(load_s, 1),
                    "optimize_s": round(optimize_s, 1),
                    "rss_mb": rss_now_mb(),
                    "build_peak_rss_mb": mark.get("build_peak_rss_mb"),
                }
            )
        note(searched=True, rss_mb_searched=rss_now_mb())
        store.close()
    return rows


def bench_embeddings(data_dir: Path, n: int) -> list[dict]:
    from appliance.embeddings.onnx import OnnxEmbedder
    from appliance.embeddings.sentence_transformers import SentenceTransformerEmbedder
    from appliance.models import resolve_embedding

    entry = resolve_embedding("default", "all-minilm-l6-v2", data_dir / "models")
    rng = np.random.default_rng(1)
    words = vocabulary()
    texts = [" ".join(rng.choice(words, 320)) for _ in range(n)]  # over 256 tokens: truncated to 256
    rows = []
    for threads in (1, 2):
        embedders: list[tuple[str, Any]] = [
            ("torch fp32", SentenceTransformerEmbedder(entry.name, entry.path, threads, 32, "float32")),
            ("torch bf16", SentenceTransformerEmbedder(entry.name, entry.path, threads, 32, "bfloat16")),
            ("onnx fp32", OnnxEmbedder(entry.name, entry.path, data_dir / "onnx", "none", threads, 32)),
            ("onnx int8", OnnxEmbedder(entry.name, entry.path, data_dir / "onnx", "int8", threads, 32)),
        ]
        for label, emb in embedders:
            emb.start()
            emb.embed_documents(texts[:4])  # warm-up
            tokens = statistics.mean(min(emb.count_tokens(t), emb.max_tokens) for t in texts)
            started = time.perf_counter()
            emb.embed_documents(texts)
            elapsed = time.perf_counter() - started
            variant = getattr(emb, "variant", "") or getattr(emb, "dtype", "") or label.split()[-1]
            rows.append(
                {
                    "backend": label,
                    "variant": variant,
                    "threads": threads,
                    "chunks": n,
                    "tokens_per_chunk": round(tokens),
                    "chunks_per_s": round(n / elapsed, 1),
                }
            )
            emb.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="Collection sizes, comma-separated.")
    parser.add_argument(
        "--local-sizes",
        default="2000",
        help="Sizes for qdrant-client local mode (it is slow), comma-separated.",
    )
    parser.add_argument("--queries", type=int, default=200, help="Searches per Edge configuration.")
    parser.add_argument(
        "--local-queries", type=int, default=20, help="Searches per local-mode configuration."
    )
    parser.add_argument("--embed-chunks", type=int, default=64, help="Chunks per embedding run.")
    parser.add_argument("--out", default=str(PARTS / "retrieval.json"))
    args = parser.parse_args()
    prepare_offline_env()
    install_guard()

    plan = [("qdrant-local", int(s), args.local_queries) for s in args.local_sizes.split(",") if s]
    plan += [("edge", int(s), args.queries) for s in args.sizes.split(",") if s]
    plan.sort(key=lambda p: (p[1], p[0]))
    search_rows: list[dict] = []
    stages: list[dict] = []
    progress = Path(args.out).with_suffix(".progress.json")
    for kind, n, queries in plan:
        search_rows.extend(bench_store(kind, n, queries, progress))
        stages.append(json.loads(progress.read_text()))
        print(f"  measured {kind} at {n} chunks", file=sys.stderr)
    embed_rows = []
    if args.embed_chunks:  # 0: search only (bench/run.py's 1M step)
        with tempfile.TemporaryDirectory() as tmp:
            embed_rows = bench_embeddings(Path(tmp), args.embed_chunks)

    print("\nSearch (hybrid, k=5), latency per query")
    print(
        f"{'store':14} {'chunks':>8} {'filter':>6} {'p50 ms':>8} {'p95 ms':>8} {'load s':>7} {'optimize s':>10}"
    )
    for r in search_rows:
        print(
            f"{r['store']:14} {r['chunks']:>8} {r['filter']:>6} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['load_s']:>7.1f} {r['optimize_s']:>10.1f}"
        )
    print("\nEmbedding throughput, 256-token chunks")
    print(f"{'backend':12} {'variant':>7} {'threads':>7} {'chunks/s':>9}")
    for r in embed_rows:
        print(f"{r['backend']:12} {r['variant']:>7} {r['threads']:>7} {r['chunks_per_s']:>9.1f}")
    result = {
        "machine": machine_info(),
        "search": search_rows,
        "stages": stages,  # per store and size: load and build time, RSS after each stage
        "embedding": embed_rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
