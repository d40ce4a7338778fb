"""Retrieval quality on the labelled sets, by mode and fusion method: the ablation behind
docs/retrieval.md.

Sets (``--set``, comma-separated):
- ``kb``: tests/fixtures/kb, 18 short company documents (15 English, 3 Chinese), 39 questions.
- ``pydoc``: 24 pages of the Python library reference as Debian's python3-doc package ships them
  (/usr/share/doc/python3-doc/html/library): the 14 that tests/fixtures/eval/pydoc.jsonl's 70
  questions are about and 10 neighbours that answer none of them (``PYDOC_DISTRACTORS``).
- ``zh``: tests/fixtures/kb_zh, 9 Chinese company documents (policies, reports with figures),
  45 questions.

Each set is ingested with the real pipeline (parsing, chunking, the default embedder, the Edge
shard) at ``--chunk-tokens`` / ``--overlap``, then every question is searched once per leg (dense,
BM25: ``--prefetch`` candidates each, as the store fetches them) and the legs are fused offline by
every method in ``--fusion``, with the same per-document cap as the product (``max_per_document``
2, k=5). One ``hybrid`` search per question through the real store checks that the offline fusion
of the default method is what the store returns.

Metrics: hit@1, hit@5 and MRR by document (``appliance eval``'s), and answer@5: a top-5 chunk of
the right document contains one of the expected answers.

    python bench/quality.py --set kb,pydoc,zh --chunk-tokens 200 --json bench/results/quality.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.egress import install_guard, prepare_offline_env  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
PYDOC = Path("/usr/share/doc/python3-doc/html/library")
# Pages near the asked-about ones (zlib beside gzip, queue beside heapq, ...) that make a search
# pick the right page among look-alikes.
PYDOC_DISTRACTORS = (
    "pickle zlib glob itertools operator difflib binascii queue math fnmatch".split()  # noqa: SIM905
)
SETS = {
    "kb": (FIXTURES / "kb" / "qa.jsonl", FIXTURES / "kb"),
    "pydoc": (FIXTURES / "eval" / "pydoc.jsonl", PYDOC),
    "zh": (FIXTURES / "kb_zh" / "qa.jsonl", FIXTURES / "kb_zh"),
}
# name -> (method, dense weight, bm25 weight, rrf k)
FUSIONS = {
    "rrf60": ("rrf", 1.0, 1.0, 60),
    "rrf10": ("rrf", 1.0, 1.0, 10),
    "rrf60-b1.25": ("rrf", 1.0, 1.25, 60),
    "dbsf": ("dbsf", 1.0, 1.0, 60),
    "dbsf-b1.25": ("dbsf", 1.0, 1.25, 60),
    "minmax-b0.5": ("minmax", 1.0, 0.5, 60),
    "minmax-b0.75": ("minmax", 1.0, 0.75, 60),
    "minmax": ("minmax", 1.0, 1.0, 60),
    "minmax-b1.25": ("minmax", 1.0, 1.25, 60),
    "minmax-b1.5": ("minmax", 1.0, 1.5, 60),
    "minmax-b2": ("minmax", 1.0, 2.0, 60),
}
K = 5
CAP = 2


def corpus(name: str, items: list[Any], tmp: Path) -> Path:
    """The folder to ingest: the fixtures as they are, or the python3-doc pages the set asks about."""
    if name != "pydoc":
        return SETS[name][1]
    if not PYDOC.is_dir():
        sys.exit(f"{PYDOC} is missing: apt-get install python3-doc (make system-deps)")
    folder = tmp / "pydoc" / "library"
    folder.mkdir(parents=True)
    asked = {it.doc.split("/")[-1] for it in items}
    for page in sorted(asked | {f"{m}.html" for m in PYDOC_DISTRACTORS}):
        shutil.copy(PYDOC / page, folder / page)
    return folder.parent


def ingest(folder: Path, data_dir: Path) -> tuple[Any, dict[str, Any]]:
    import connectors
    from appliance.container import Container
    from appliance.settings import load_settings

    container = Container(load_settings(data_dir=data_dir, log_level="WARNING"))
    container.embedder.start()
    container.parser  # noqa: B018  warm parser processes are not ingest time
    ext = container.settings.ingestion.extensions
    started = time.perf_counter()
    report = container.jobs.run([connectors.for_source(str(folder), extensions=ext)], "eval", [], "bench")
    elapsed = time.perf_counter() - started
    if report["failed"]:
        sys.exit(f"ingest failed: {report['failed']}")
    return container, {"docs": report["added"], "chunks": report["chunks"], "ingest_s": round(elapsed, 2)}


def judge(hits: list[Any], item: Any) -> tuple[int | None, bool]:
    from appliance.evaluation import first_hit

    cites = [{"uri": h.chunk.uri, "title": h.chunk.title} for h in hits[:K]]
    rank = first_hit(cites, item.doc)
    answers = [a.casefold() for a in item.answer_any]
    found = any(
        first_hit([c], item.doc) and any(a in h.chunk.text.casefold() for a in answers)
        for c, h in zip(cites, hits[:K], strict=True)
    )
    return rank, found


def summarise(results: list[tuple[int | None, bool]]) -> dict[str, float]:
    n = len(results)
    return {
        "hit@1": round(sum(r == 1 for r, _ in results) / n, 3),
        "hit@5": round(sum(r is not None for r, _ in results) / n, 3),
        "mrr": round(sum(1 / r for r, _ in results if r) / n, 3),
        "answer@5": round(sum(a for _, a in results) / n, 3),
    }


def evaluate_set(
    container: Any, items: list[Any], fusions: list[str], prefetch: int, answer_ks: tuple[int, ...] = (3,)
) -> dict[str, Any]:
    """``answer_ks``: the extractive answer is made from the first k hits for each k (the first:
    the product's ``rag.top_k``, the reported figure; others compare)."""
    from appliance.domain import ScoredChunk
    from appliance.evaluation import answer_contains
    from appliance.rag import answering
    from appliance.vectorstore.fusion import Candidate, cap_per_document

    store = container.store
    product = container.retriever.fusion  # the configured fusion (retrieval.* settings)
    raw = replace(product, max_per_document=0)
    rows: dict[str, list[tuple[int | None, bool]]] = {m: [] for m in ["dense", "bm25", *fusions]}
    dumped: list[dict[str, Any]] = []
    answered: dict[int, list[bool]] = {k: [] for k in answer_ks}
    mismatches = 0
    for item in items:
        vec = container.embedder.embed_query(item.question)
        legs = {
            mode: store.search("eval", vec, item.question, None, prefetch, mode=mode, fusion=raw)
            for mode in ("dense", "bm25")
        }
        lists = [
            [Candidate(h.chunk.id, h.score, h.chunk.payload()) for h in legs[m]] for m in ("dense", "bm25")
        ]
        dumped.append(
            {
                "question": item.question,
                "doc": item.doc,
                "answer_any": list(item.answer_any),
                "legs": {
                    m: [
                        [h.chunk.id, h.score, h.chunk.document_id, h.chunk.uri, h.chunk.text] for h in legs[m]
                    ]
                    for m in legs
                },
            }
        )
        lists = [side for side in lists if side]
        for mode in ("dense", "bm25"):
            top = cap_per_document(
                [Candidate(h.chunk.id, h.score, h.chunk.payload()) for h in legs[mode]], K, CAP
            )
            rows[mode].append(judge([_hit(c, ScoredChunk) for c in top], item))
        for name in fusions:
            method, wd, wb, rrf_k = FUSIONS[name]
            fused = lists[0] if len(lists) == 1 else fuse(method, lists, [wd, wb], rrf_k)
            rows[name].append(judge([_hit(c, ScoredChunk) for c in cap_per_document(fused, K, CAP)], item))
        # The store's own hybrid search must rank as the offline fusion of its configured method.
        live_hits = store.search("eval", vec, item.question, None, K, mode="hybrid", fusion=product)
        live = [h.chunk.id for h in live_hits]
        # The extractive answer from the first k, as the answer pipeline packs them (rag.top_k).
        for k in answer_ks:
            answer = asyncio.run(answering.extractive(item.question, vec, live_hits[:k], container.embedder))
            answered[k].append(answer_contains(answer, item.answer_any))
        method = getattr(product, "method", "rrf")
        weights = [product.dense_weight, product.bm25_weight]
        expected = lists[0] if len(lists) == 1 else fuse(method, lists, weights, product.rrf_k)
        if live != [c.id for c in cap_per_document(expected, K, CAP)]:
            mismatches += 1
    misses = {
        m: [it.question for it, (rank, found) in zip(items, r, strict=True) if rank != 1 or not found]
        for m, r in rows.items()
    }
    return {
        "modes": {m: summarise(r) for m, r in rows.items()},
        "live_mismatches": mismatches,
        "extractive_answer_contains": round(sum(answered[answer_ks[0]]) / len(items), 3),
        "extractive_answer_contains_by_k": {k: round(sum(a) / len(items), 3) for k, a in answered.items()},
        "misses": misses,
        "legs": dumped,
    }


def fuse(method: str, lists: list[Any], weights: list[float], rrf_k: int) -> list[Any]:
    from appliance.vectorstore import fusion

    if method == "rrf":
        return fusion.weighted_rrf(lists, weights, rrf_k)
    return fusion.minmax(lists, weights) if method == "minmax" else fusion.dbsf(lists, weights)


def _hit(cand: Any, scored: Any) -> Any:
    from appliance.domain import Chunk

    return scored(Chunk.from_payload(cand.id, cand.payload), cand.score)


def ablate(args: argparse.Namespace) -> None:
    """Switch the product's chunking and BM25 rules for one run (nothing is persisted)."""
    from appliance.ingestion import chunking
    from appliance.vectorstore import bm25, edge

    for flag, name in (
        ("combine", "COMBINE_SHARE"),
        ("min_share", "MIN_SHARE"),
        ("heading_share", "HEADING_SHARE"),
    ):
        if getattr(args, flag) is not None:
            setattr(chunking, name, getattr(args, flag))
    if args.zh == "unigrams+bigrams":
        edge.CURRENT_SPARSE = "bm25"  # new collections as they were made before jieba
    elif args.zh == "words":

        def words_only(run: str) -> list[str]:
            return [w for w in bm25._segmenter().cut_for_search(run) if w not in bm25.ZH_STOPWORDS]

        bm25._han_words = words_only


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", default="kb,pydoc,zh", help="Sets to run, comma-separated: kb, pydoc, zh.")
    parser.add_argument("--fusion", default=",".join(FUSIONS), help="Fusion methods: " + ", ".join(FUSIONS))
    parser.add_argument(
        "--chunk-tokens", type=int, default=None, help="ingestion.chunk_tokens (default: settings)."
    )
    parser.add_argument("--overlap", type=int, default=None, help="ingestion.chunk_overlap_tokens.")
    parser.add_argument("--combine", type=float, default=None, help="chunking.COMBINE_SHARE (ablation).")
    parser.add_argument("--min-share", type=float, default=None, help="chunking.MIN_SHARE (ablation).")
    parser.add_argument(
        "--heading-share",
        type=float,
        default=None,
        help="chunking.HEADING_SHARE; 0: no heading on every chunk.",
    )
    parser.add_argument(
        "--zh",
        choices=["words+bigrams", "words", "unigrams+bigrams"],
        default=None,
        help="Chinese BM25 terms for new collections (ablation; unigrams+bigrams is tokenizer 1).",
    )
    parser.add_argument("--prefetch", type=int, default=30, help="Candidates per leg before fusion.")
    parser.add_argument(
        "--answer-k",
        default="3",
        help="Hits the extractive answer is made from, comma-separated (the first is reported).",
    )
    parser.add_argument("--misses", action="store_true", help="Print the questions each mode misses.")
    parser.add_argument("--legs", action="store_true", help="Keep every question's candidates in --json.")
    parser.add_argument("--json", dest="out", default=None, help="Also write the results to this file.")
    args = parser.parse_args()
    os.environ["UNSTRUCTURED_DISABLE_NOTICE"] = "1"
    if args.chunk_tokens:
        os.environ["APPLIANCE_INGESTION__CHUNK_TOKENS"] = str(args.chunk_tokens)
    if args.overlap is not None:
        os.environ["APPLIANCE_INGESTION__CHUNK_OVERLAP_TOKENS"] = str(args.overlap)
    prepare_offline_env()
    install_guard()
    ablate(args)
    from appliance.evaluation import load_qa

    fusions = [f for f in args.fusion.split(",") if f]
    ks = tuple(int(k) for k in args.answer_k.split(",") if k)
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "chunk_tokens": args.chunk_tokens,
        "overlap": args.overlap,
        "sets": {},
    }
    for name in [s for s in args.set.split(",") if s]:
        items = load_qa(SETS[name][0])
        with tempfile.TemporaryDirectory() as tmp:
            container, info = ingest(corpus(name, items, Path(tmp)), Path(tmp) / "data")
            try:
                info.update(evaluate_set(container, items, fusions, args.prefetch, ks))
            finally:
                container.close()
        info["questions"] = len(items)
        result["sets"][name] = info
        print(
            f"\n{name}: {len(items)} questions, {info['docs']} documents, {info['chunks']} chunks, "
            f"ingest {info['ingest_s']} s, live/offline mismatches {info['live_mismatches']}, "
            f"extractive answers containing an expected string {info['extractive_answer_contains']:.3f}"
            + (f" (by hits used: {info['extractive_answer_contains_by_k']})" if len(ks) > 1 else "")
        )
        print(f"  {'mode':12} {'hit@1':>6} {'hit@5':>6} {'MRR':>6} {'ans@5':>6}")
        for mode, m in info["modes"].items():
            print(f"  {mode:12} {m['hit@1']:>6.3f} {m['hit@5']:>6.3f} {m['mrr']:>6.3f} {m['answer@5']:>6.3f}")
            if args.misses:
                for question in info["misses"][mode]:
                    print(f"      not first or no answer in top 5: {question}")
    if args.out:
        if not args.legs:
            for info in result["sets"].values():
                info.pop("legs", None)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
