"""Ingestion throughput against LangChain and LlamaIndex, in one run, same corpora, same MiniLM.

Ours: the appliance's pipeline (libmagic, warm parser processes, structure-aware chunking,
ledger, Qdrant Edge shard with BM25 index). The baselines: see bench/baselines.py. Corpora (see
bench/corpora.py): generated documents in eight formats; the Python library reference's HTML
(python3-doc: text-heavy, real markup); Chinese plain text. LlamaIndex reads text formats only.

All three start warm; the sides run in turn ``--repeat`` times, the order rotating each repeat,
every repeat on freshly written bytes. A ratio quoted is the median of the pair ratios (this
host's speed drifts within minutes); rates are the median of the runs.

Also: a re-sync after 10% of the files changed (the baselines have no ledger: all again), the
scale curve of ours on generated markdown at ``--scale`` chunks, and retrieval side by side on the
labelled set with the pipelines loaded here (bench/retrieval_sides.py).

Prints a table and writes its JSON part (see bench/common.py). `make bench` runs it.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.egress import install_guard, prepare_offline_env  # noqa: E402
from bench import corpora, retrieval_sides  # noqa: E402
from bench.common import add_out_arg, machine_info, write_json  # noqa: E402

TEXT_SET = (*corpora.TEXT_FORMATS, "pydoc", "zh")


def start_ours(data_dir: Path) -> tuple[Any, float]:
    from appliance.container import Container
    from appliance.settings import load_settings

    container = Container(load_settings(data_dir=data_dir))
    t = time.perf_counter()
    container.embedder.start()
    container.parser.start()
    return container, time.perf_counter() - t


def ingest_ours(container: Any, folder: Path, collection: str) -> dict[str, float]:
    import connectors

    jobs = container.jobs  # built before the clock starts
    connector = connectors.for_source(str(folder), extensions=container.settings.ingestion.extensions)
    t = time.perf_counter()
    summary = jobs.run([connector], collection, [], "bench")
    elapsed = time.perf_counter() - t
    assert not summary["failed"], summary["failed"]
    return {"docs": summary["added"] + summary["updated"], "chunks": summary["chunks"], "seconds": elapsed}


def lay_out(root: Path, args: argparse.Namespace, variant: int) -> dict[str, Path]:
    out = corpora.formats_corpus(root, args.docs, variant)
    if pydoc := corpora.pydoc_files(args.pydoc_files):
        out["pydoc"] = corpora.copy_variant(pydoc, root / "pydoc", variant)
    if zh := corpora.chinese_corpus(root / "zh", variant, args.zh_docs):
        out["zh"] = zh
    return out


def ratio(base: dict[str, Any], ours: dict[str, Any], names: tuple[str, ...]) -> float | None:
    common = [n for n in names if n in base and n in ours]
    if not common:
        return None
    return sum(base[n]["seconds"] for n in common) / sum(ours[n]["seconds"] for n in common)


def median_or_none(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return round(statistics.median(kept), 3) if kept else None


def scale_curve(container: Any, work: Path, targets: list[int]) -> list[dict[str, Any]]:
    rows = []
    for target in targets:
        # ~24 chunks per generated document of 8 sections (measured on this generator).
        folder = corpora.markdown_corpus(work / f"scale-{target}", max(1, target // 24), seed=target)
        r = ingest_ours(container, folder, f"scale{target}")
        rows.append({**r, "target_chunks": target, "chunks_per_s": round(r["chunks"] / r["seconds"], 1)})
        print(f"  scale {target}: {rows[-1]}", file=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=6, help="generated documents per format")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--pydoc-files", type=int, default=40, help="python3-doc pages")
    parser.add_argument("--zh-docs", type=int, default=5, help="Chinese reports of ~40 KB")
    parser.add_argument("--scale", default="1000,10000", help="chunk counts of ours' scale curve")
    parser.add_argument("--no-llamaindex", action="store_true")
    parser.add_argument(
        "--no-defaults", action="store_true", help="skip the baselines at their default chunking"
    )
    parser.add_argument(
        "--no-retrieval", action="store_true", help="skip retrieval side by side on the labelled set"
    )
    add_out_arg(parser, "ingest")
    args = parser.parse_args()
    prepare_offline_env()
    install_guard()
    import torch

    from appliance.models import resolve_spacy
    from bench.baselines import LangChainPipeline, LlamaIndexPipeline

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        container, startup = start_ours(work / "data")
        model = container.embedder.path
        spacy = resolve_spacy(container.settings.models.spacy).path
        # Equal chunking: our target and overlap, in the same tokenizer's tokens (the fair
        # comparison); "_defaults": theirs as documented (fewer, larger, truncated chunks).
        ing = container.settings.ingestion
        equal = (ing.chunk_tokens, ing.chunk_overlap_tokens)
        lc = LangChainPipeline(model, spacy, chunking=equal)
        sides: dict[str, Any] = {"langchain": lc}
        if not args.no_llamaindex:
            sides["llamaindex"] = LlamaIndexPipeline(model, chunking=equal)
        if not args.no_defaults:
            sides["langchain_defaults"] = LangChainPipeline(model, spacy, embeddings=lc.embeddings)
            if not args.no_llamaindex:
                sides["llamaindex_defaults"] = LlamaIndexPipeline(
                    model, embed_model=sides["llamaindex"].embed_model
                )
        order = ["ours", *sides]
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in order}
        sizes: dict[str, float] = {}
        for r in range(args.repeat):
            corpus = lay_out(work / f"corpus{r}", args, r)
            sizes = {name: round(corpora.folder_mb(folder), 3) for name, folder in corpus.items()}
            # A new collection costs its creation once; the baselines' in-memory stores cost none.
            warm = corpora.markdown_corpus(work / f"warm{r}", 1, 1, seed=r)
            ingest_ours(container, warm, f"bench{r}")
            turn = order[r % len(order) :] + order[: r % len(order)]
            for side in turn:
                result = {}
                for name, folder in corpus.items():
                    if side == "ours":
                        result[name] = ingest_ours(container, folder, f"bench{r}")
                    elif sides[side].binary_formats or name in TEXT_SET:
                        result[name] = sides[side].ingest(folder)
                runs[side].append(result)
                print(
                    f"  repeat {r + 1} {side}: {sum(x['seconds'] for x in result.values()):.1f} s",
                    file=sys.stderr,
                )
            if r < args.repeat - 1:
                shutil.rmtree(work / f"corpus{r}", ignore_errors=True)

        last = corpus
        rng = random.Random(3)
        files = sorted(p for n in ("md", "txt") for p in last[n].iterdir())
        for p in rng.sample(files, max(1, len(files) // 10)):
            p.write_text(p.read_text() + f"\n\nAppendix: {corpora.sentence(rng)}\n")
        t = time.perf_counter()
        for folder in last.values():
            ingest_ours(container, folder, f"bench{args.repeat - 1}")
        resync = time.perf_counter() - t
        t = time.perf_counter()
        for name in corpora.FORMATS:
            sides["langchain"].ingest(last[name])
        resync_base = time.perf_counter() - t

        scale = scale_curve(container, work, [int(x) for x in args.scale.split(",") if x])
        retrieval = (
            {}
            if args.no_retrieval
            else retrieval_sides.compare(
                container, work / "sides", {k: v for k, v in sides.items() if not k.endswith("_defaults")}
            )
        )
        container.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def per_corpus(side: str) -> dict[str, dict[str, float]]:
        names = runs[side][0].keys()
        return {
            n: {
                "docs": runs[side][0][n]["docs"],
                "chunks": runs[side][0][n]["chunks"],
                "seconds": round(statistics.median(x[n]["seconds"] for x in runs[side]), 3),
                "chunks_per_s": round(
                    statistics.median(x[n]["chunks"] / x[n]["seconds"] for x in runs[side]), 1
                ),
            }
            for n in names
        }

    result: dict[str, Any] = {
        "machine": machine_info(),
        "settings": vars(args) | {"out": str(args.out)},
        "corpus_mb": sizes,
        "sides": {side: per_corpus(side) for side in order},
        "ours_startup_s": round(startup, 2),
        "ratios": {},
        "resync_10pct": {"ours_s": round(resync, 2), "langchain_s": round(resync_base, 2)},
        "scale": scale,
        "retrieval_sides": retrieval,
    }
    result["chunking"] = {"target_tokens": equal[0], "overlap_tokens": equal[1]}
    fmt_rates = [
        sum(x[n]["chunks"] for n in corpora.FORMATS) / sum(x[n]["seconds"] for n in corpora.FORMATS)
        for x in runs["ours"]
    ]
    result["ours_chunks_per_s"] = round(statistics.median(fmt_rates), 1)
    for side in sides:
        for label, names in (
            ("formats", corpora.FORMATS),
            ("text", TEXT_SET),
            ("pydoc", ("pydoc",)),
            ("zh", ("zh",)),
        ):
            if label == "formats" and not sides[side].binary_formats:
                continue
            pairs = [ratio(b, o, names) for o, b in zip(runs["ours"], runs[side], strict=True)]
            if any(p is not None for p in pairs):
                result["ratios"][f"{side}_{label}"] = {
                    "median": median_or_none(pairs),
                    "pairs": [round(p, 3) for p in pairs if p is not None],
                }
    write_json(args.out, result)

    print(f"{'corpus':7} {'MB':>6} | " + " | ".join(f"{s:>10} s {'chunks':>6}" for s in order))
    for name, mb in sizes.items():
        cells = []
        for side in order:
            c = result["sides"][side].get(name)
            cells.append(f"{c['seconds']:12.2f} {c['chunks']:>6}" if c else f"{'-':>12} {'':>6}")
        print(f"{name:7} {mb:6.2f} | " + " | ".join(cells))
    for key, value in result["ratios"].items():
        print(f"ratio {key:22} {value['median']}  pairs {value['pairs']}")
    for side, r in retrieval.items():
        print(f"retrieval {side:18} {r}")
    print(
        f"ours on the 8 formats: {result['ours_chunks_per_s']} chunks/s; re-sync 10%: {result['resync_10pct']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
