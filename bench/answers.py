"""Answer quality per answer mode, on the labelled set, with the real models.

Ingests the labelled corpus (tests/fixtures/kb/ with qa.jsonl when present, else the fixture corpus
of tests/fixtures/corpus.py) into a temporary data dir, then for every question:
- retrieval hit@1 / hit@5 (a hit: a result whose uri or title contains the labelled `doc`);
- for each answer mode (abstractive, extractive, grounded): answer-contains (any of `answer_any`,
  case-insensitive), citation-correct (a source the answer cites as [n] is the labelled doc),
  mean support score, fallback rate, mean latency;
- follow-up condensing (off / heuristic / llm): hit@1 of follow-up questions asked after a first one.
Prints a table and writes its JSON part (bench/common.py). Usage: python bench/answers.py [--llm PATH.gguf]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.egress import install_guard, prepare_offline_env  # noqa: E402
from bench.common import add_out_arg, write_json  # noqa: E402

MODES = ("abstractive", "extractive", "grounded")
# (first question, follow-up, doc the follow-up is about)
FOLLOW_UPS = [
    ("What is the warranty period of the X-200 turbine?", "And what parts does it cover?", "warranty.pdf"),
    (
        "Where is the emergency assembly point for the Bergen plant?",
        "What number should I call there?",
        "safety.html",
    ),
    (
        "How many days of paid vacation does a permanent employee receive per year?",
        "Until when can unused ones be carried over?",
        "handbook.md",
    ),
    ("When is the backup diesel generator in Oslo load-tested?", "How long does that test run?", "notes.txt"),
    ("Who must approve travel expenses above 500 euros?", "And when are receipts due?", "expenses.docx"),
]


def labelled_set(tmp: Path) -> tuple[Path, list[dict[str, Any]], str]:
    kb = ROOT / "tests" / "fixtures" / "kb"
    if (kb / "qa.jsonl").is_file():
        items = [json.loads(line) for line in (kb / "qa.jsonl").read_text().splitlines() if line.strip()]
        return kb, items, "tests/fixtures/kb"
    from tests.fixtures.corpus import QUESTIONS, make_corpus

    items = [{"question": q, "doc": d, "answer_any": a} for q, d, a in QUESTIONS]
    return make_corpus(tmp / "corpus"), items, "tests/fixtures/corpus.py"


def is_hit(citation: dict[str, Any], doc: str) -> bool:
    return doc.lower() in citation["uri"].lower() or doc.lower() in citation["title"].lower()


def contains(answer: str, answers: list[str]) -> bool:
    return any(a.lower() in answer.lower() for a in answers)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--llm", help="GGUF file to use instead of the default model")
    add_out_arg(parser, "answers")
    # Answers are one fact; SmolLM2 rambles past it, and 2 shared cores make every token count.
    parser.add_argument("--max-tokens", type=int, default=96, help="generation limit per answer")
    parser.add_argument(
        "--sample", type=int, default=0, help="answer only N questions spread over the set (0: all)"
    )
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: the setting)")
    args = parser.parse_args()
    prepare_offline_env()
    install_guard()
    import connectors
    from appliance.container import Container
    from appliance.domain import LOCAL_ADMIN, ApplianceError
    from appliance.settings import load_settings

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        docs, items, source = labelled_set(tmpdir)
        overrides: dict[str, Any] = {
            "data_dir": tmpdir / "data",
            "inference": {"max_tokens": args.max_tokens},
        }
        if args.llm:
            overrides["models"] = {"llm": args.llm, "llm_name": Path(args.llm).stem}
        settings = load_settings(**overrides)
        container = Container(settings)
        try:
            rep = container.ingestion.ingest(
                connectors.for_source(str(docs), extensions=settings.ingestion.extensions), "default"
            )
            container.pool.start()
            results["labelled_set"] = {"source": source, "questions": len(items), "chunks": rep.chunks}
            results["model"] = container.pool.backend().name
            results["max_tokens"] = args.max_tokens
            rag = container.rag

            hit1 = hit5 = 0
            for item in items:
                hits, _ = container.search.search(item["question"], LOCAL_ADMIN, None, 5)
                uris = [{"uri": h.chunk.uri, "title": h.chunk.title} for h in hits]
                hit1 += bool(uris) and is_hit(uris[0], item["doc"])
                hit5 += any(is_hit(u, item["doc"]) for u in uris)
            results["retrieval"] = {
                "hit@1": round(hit1 / len(items), 3),
                "hit@5": round(hit5 / len(items), 3),
            }

            asked = items
            if args.sample and args.sample < len(items):
                step = len(items) / args.sample
                asked = [items[int(i * step)] for i in range(args.sample)]
            results["answered_questions"] = len(asked)
            per_mode: dict[str, Any] = {}
            examples: dict[str, list[dict[str, Any]]] = {}
            for mode in MODES:
                ok = cited_ok = fallbacks = failed = 0
                supports, totals = [], []
                examples[mode] = []
                for item in asked:
                    try:
                        r = asyncio.run(rag.ask(item["question"], LOCAL_ADMIN, mode=mode))
                    except ApplianceError as exc:
                        # A deadline on a loaded host is a wrong answer, not the end of the bench.
                        failed += 1
                        examples[mode].append({"q": item["question"], "error": f"{exc.code}: {exc}"})
                        continue
                    print(
                        f"  {mode:11} {r.timings['total_ms']:7.0f} ms  {item['question'][:60]}",
                        file=sys.stderr,
                    )
                    good = contains(r.answer, item["answer_any"])
                    cited = [c for c in r.citations if c.get("cited")]
                    right = any(is_hit(c, item["doc"]) for c in cited)
                    ok += good
                    cited_ok += right
                    fallbacks += r.fallback
                    supports.append(r.support or 0.0)
                    totals.append(r.timings["total_ms"])
                    examples[mode].append(
                        {"q": item["question"], "answer": r.answer, "contains": good, "cited_right": right}
                    )
                n = len(asked)
                per_mode[mode] = {
                    "answer_contains": round(ok / n, 3),
                    "citation_correct": round(cited_ok / n, 3),
                    "mean_support": round(statistics.mean(supports), 3) if supports else None,
                    "fallback_rate": round(fallbacks / n, 3),
                    "total_ms_p50": round(statistics.median(totals), 1) if totals else None,
                    "failed": failed,
                }
            results["modes"] = per_mode
            results["examples"] = examples

            condense: dict[str, Any] = {}
            # The follow-ups are written for the fixture corpus; elsewhere they measure nothing.
            known = {p.name for p in Path(docs).rglob("*")}
            modes = ("off", "heuristic", "llm") if all(d in known for _, _, d in FOLLOW_UPS) else ()
            for how in modes:
                rag.options = type(rag.options)(**{**rag.options.__dict__, "condense": how})
                hits_at_1 = 0
                started = time.perf_counter()
                for first, follow, doc in FOLLOW_UPS:
                    history = [{"role": "user", "content": first}, {"role": "assistant", "content": "..."}]
                    try:
                        query, _ = asyncio.run(rag.condense(follow, history, None))
                    except ApplianceError:
                        continue  # counted as a miss (a deadline on a loaded host)
                    hits, _ = container.search.search(query, LOCAL_ADMIN, None, 1)
                    hits_at_1 += bool(hits) and doc in hits[0].chunk.uri
                condense[how] = {
                    "follow_up_hit@1": round(hits_at_1 / len(FOLLOW_UPS), 3),
                    "ms_per_question": round((time.perf_counter() - started) * 1000 / len(FOLLOW_UPS), 1),
                }
            results["condense"] = condense
        finally:
            container.close()

    print(
        f"labelled set: {results['labelled_set']}  model: {results['model']}  "
        f"answered: {results['answered_questions']} questions, max_tokens {results['max_tokens']}"
    )
    print(f"retrieval: {results['retrieval']}")
    print(
        f"{'mode':12} {'contains':>9} {'cited ok':>9} {'support':>8} {'fallback':>9} {'p50 ms':>8} {'failed':>6}"
    )
    for mode, m in results["modes"].items():
        print(
            f"{mode:12} {m['answer_contains']:9.2f} {m['citation_correct']:9.2f} {m['mean_support'] or 0:8.2f} "
            f"{m['fallback_rate']:9.2f} {m['total_ms_p50'] or 0:8.0f} {m['failed']:6}"
        )
    print(f"{'condense':12} {'follow-up hit@1':>16} {'ms/question':>12}")
    for how, c in results["condense"].items():
        print(f"{how:12} {c['follow_up_hit@1']:16.2f} {c['ms_per_question']:12.1f}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()
