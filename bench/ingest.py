"""Ingestion throughput per format, against a LangChain baseline on the same corpus and model.

Ours: the appliance's pipeline (libmagic, warm parser processes, structure-aware chunking,
ledger, Qdrant Edge shard with BM25 index). Baseline, LangChain defaults: langchain-community's
UnstructuredFileLoader (unstructured in process, the same "fast" PDF strategy), the
RecursiveCharacterTextSplitter (1000/200 characters), HuggingFaceEmbeddings over the SAME local
all-MiniLM-L6-v2 folder (float32, torch on every core), and an InMemoryVectorStore; unstructured
loads spaCy as it does by itself. Both start warm (models loaded, parser started); the corpus is
generated, a few MB at most. The two run in turn ``--repeat`` times (3); the ratio quoted is the
median of the pairs' ratios, the per-format rates the median of the runs.

Also measured: a re-sync after 10% of the files changed (the baseline has no ledger, so it must
run again in full).

Prints a table and writes bench/results/ingest.json. Run with `make bench` (installs the `bench`
extra) or `python bench/ingest.py [--docs N]`.
"""

from __future__ import annotations

import argparse
import io
import json
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
FORMATS = ("md", "txt", "html", "pdf", "docx", "pptx", "xlsx", "csv")


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + "."


def sections(rng: random.Random, n: int) -> list[tuple[str, list[str]]]:
    return [
        (
            f"Section {i}: {rng.choice(WORDS)} {rng.choice(WORDS)}",
            [" ".join(sentence(rng) for _ in range(5)) for _ in range(3)],
        )
        for i in range(n)
    ]


def write_doc(path: Path, fmt: str, rng: random.Random) -> None:
    secs = sections(rng, 6)
    match fmt:
        case "md":
            path.write_text("\n\n".join(f"## {h}\n\n" + "\n\n".join(ps) for h, ps in secs))
        case "txt":
            path.write_text("\n\n".join(f"{h}\n\n" + "\n\n".join(ps) for h, ps in secs))
        case "html":
            body = "".join(f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in secs)
            path.write_text(f"<html><head><title>{secs[0][0]}</title></head><body>{body}</body></html>")
        case "pdf":
            from reportlab.lib.pagesizes import A4
            from reportlab.lib.styles import getSampleStyleSheet
            from reportlab.platypus import Paragraph, SimpleDocTemplate

            styles = getSampleStyleSheet()
            flow = []
            for h, ps in secs:
                flow.append(Paragraph(h, styles["Heading2"]))
                flow.extend(Paragraph(p, styles["BodyText"]) for p in ps)
            SimpleDocTemplate(str(path), pagesize=A4).build(flow)
        case "docx":
            import docx

            d = docx.Document()
            for h, ps in secs:
                d.add_heading(h, 2)
                for p in ps:
                    d.add_paragraph(p)
            d.save(str(path))
        case "pptx":
            from pptx import Presentation

            deck = Presentation()
            for h, ps in secs:
                slide = deck.slides.add_slide(deck.slide_layouts[1])
                slide.shapes.title.text = h
                slide.placeholders[1].text = "\n".join(ps)
            deck.save(str(path))
        case "xlsx":
            import openpyxl

            wb = openpyxl.Workbook()
            ws = wb.active
            ws.append(["id", "item", "note"])
            for i in range(60):
                ws.append([i, rng.choice(WORDS), sentence(rng)])
            wb.save(str(path))
        case "csv":
            buf = io.StringIO()
            buf.write("id,item,note\n")
            for i in range(60):
                buf.write(f"{i},{rng.choice(WORDS)},{sentence(rng)}\n")
            path.write_text(buf.getvalue())


def make_corpus(root: Path, per_format: int, seed: int = 11) -> dict[str, Path]:
    rng = random.Random(seed)
    out = {}
    for fmt in FORMATS:
        folder = root / fmt
        folder.mkdir(parents=True)
        for i in range(per_format):
            write_doc(folder / f"{fmt}-{i:03}.{fmt}", fmt, rng)
        out[fmt] = folder
    return out


def size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.iterdir()) / 2**20


# --- ours ---------------------------------------------------------------------------------------


def start_ours(data_dir: Path) -> tuple[Any, float]:
    from appliance.container import Container
    from appliance.settings import load_settings

    container = Container(load_settings(data_dir=data_dir))
    container.acquire()
    t = time.perf_counter()
    container.embedder.start()
    container.parser.start()
    return container, time.perf_counter() - t


def run_ours(container: Any, corpus: dict[str, Path], collection: str) -> dict[str, dict[str, float]]:
    import connectors

    jobs = container.jobs  # built before the clock starts
    results = {}
    for fmt, folder in corpus.items():
        connector = connectors.for_source(str(folder), extensions=container.settings.ingestion.extensions)
        t = time.perf_counter()
        summary = jobs.run([connector], collection, [], "bench")
        elapsed = time.perf_counter() - t
        assert not summary["failed"], summary["failed"]
        results[fmt] = {"docs": summary["added"], "chunks": summary["chunks"], "seconds": elapsed}
    return results


def resync_ours(container: Any, corpus: dict[str, Path], collection: str) -> float:
    import connectors

    jobs = container.jobs
    t = time.perf_counter()
    for folder in corpus.values():
        connector = connectors.for_source(str(folder), extensions=container.settings.ingestion.extensions)
        summary = jobs.run([connector], collection, [], "bench")
        assert not summary["failed"]
    return time.perf_counter() - t


# --- baseline -----------------------------------------------------------------------------------


def baseline_setup(container: Any) -> tuple[Any, Any]:
    from langchain_community.embeddings import HuggingFaceEmbeddings

    from appliance.ingestion.parsing import _use_local_spacy
    from appliance.models import resolve_spacy

    # unstructured in this process would otherwise try to download its spaCy model; it gets the
    # pipeline unstructured itself would load (the dependency parser for sentences).
    _use_local_spacy(str(resolve_spacy(container.settings.models.spacy).path), senter=False)
    import torch

    torch.set_num_threads(2)  # LangChain's defaults: torch on every core, whatever ours used
    embeddings = HuggingFaceEmbeddings(
        model_name=str(container.embedder.path), model_kwargs={"device": "cpu", "local_files_only": True}
    )
    embeddings.embed_documents(["warm up"])
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    return embeddings, RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)


def run_baseline(corpus: dict[str, Path], embeddings: Any, splitter: Any) -> dict[str, dict[str, float]]:
    from langchain_community.document_loaders import UnstructuredFileLoader
    from langchain_core.vectorstores import InMemoryVectorStore

    results = {}
    for fmt, folder in corpus.items():
        store = InMemoryVectorStore(embeddings)
        t = time.perf_counter()
        docs = []
        for path in sorted(folder.iterdir()):
            docs.extend(UnstructuredFileLoader(str(path), strategy="fast").load())
        splits = splitter.split_documents(docs)
        store.add_documents(splits)
        elapsed = time.perf_counter() - t
        results[fmt] = {"docs": len(list(folder.iterdir())), "chunks": len(splits), "seconds": elapsed}
    return results


def median_runs(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per format: the documents and chunks of the first run, the median seconds of all."""
    return {
        fmt: {**runs[0][fmt], "seconds": statistics.median(r[fmt]["seconds"] for r in runs)}
        for fmt in runs[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=6, help="documents per format")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side, alternating")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    prepare_offline_env()
    install_guard()
    import torch

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    try:
        corpus = make_corpus(work / "corpus", args.docs)
        sizes = {fmt: size_mb(folder) for fmt, folder in corpus.items()}
        container, startup = start_ours(work / "data")
        embeddings, splitter = baseline_setup(container)
        # Ours and the baseline in turn, each repeat into a fresh collection: this machine's speed
        # drifts by 20% within minutes, so the ratio is taken pair by pair and the median quoted.
        ours_runs, base_runs = [], []
        for r in range(args.repeat):
            ours_runs.append(run_ours(container, corpus, f"bench{r}"))
            base_runs.append(run_baseline(corpus, embeddings, splitter))
        pair_ratios = [
            sum(b[f]["seconds"] for f in corpus) / sum(o[f]["seconds"] for f in corpus)
            for o, b in zip(ours_runs, base_runs, strict=True)
        ]
        ours, base = median_runs(ours_runs), median_runs(base_runs)

        rng = random.Random(3)
        files = sorted(
            p for folder in corpus.values() for p in folder.iterdir() if p.suffix in (".md", ".txt")
        )
        changed = rng.sample(files, max(1, len(files) // 10))
        for p in changed:
            p.write_text(p.read_text() + f"\n\nAppendix: {sentence(rng)}\n")
        resync = resync_ours(container, corpus, f"bench{args.repeat - 1}")
        container.close()
        t = time.perf_counter()
        run_baseline(corpus, embeddings, splitter)
        base_resync = time.perf_counter() - t
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    tot = {"ours": [0, 0, 0.0], "base": [0, 0, 0.0]}
    print(
        f"{'format':7} {'MB':>6} | {'ours docs/s':>11} {'chunks/s':>9} {'MB/s':>6} | {'base docs/s':>11} {'chunks/s':>9} {'MB/s':>6} | {'ratio':>5}"
    )
    for fmt in corpus:
        mb = sizes[fmt]
        o, b = ours[fmt], base[fmt]
        row = {
            "format": fmt,
            "docs": o["docs"],
            "mb": round(mb, 3),
            "ours": {
                "docs_s": o["docs"] / o["seconds"],
                "chunks_s": o["chunks"] / o["seconds"],
                "mb_s": mb / o["seconds"],
                "chunks": o["chunks"],
                "seconds": o["seconds"],
            },
            "baseline": {
                "docs_s": b["docs"] / b["seconds"],
                "chunks_s": b["chunks"] / b["seconds"],
                "mb_s": mb / b["seconds"],
                "chunks": b["chunks"],
                "seconds": b["seconds"],
            },
        }
        row["ratio_docs_s"] = row["ours"]["docs_s"] / row["baseline"]["docs_s"]
        rows.append(row)
        for key, r in (("ours", o), ("base", b)):
            tot[key][0] += r["docs"]
            tot[key][1] += r["chunks"]
            tot[key][2] += r["seconds"]
        print(
            f"{fmt:7} {mb:6.2f} | {row['ours']['docs_s']:11.2f} {row['ours']['chunks_s']:9.1f} {row['ours']['mb_s']:6.3f} | "
            f"{row['baseline']['docs_s']:11.2f} {row['baseline']['chunks_s']:9.1f} {row['baseline']['mb_s']:6.3f} | {row['ratio_docs_s']:5.2f}"
        )
    total = {
        "ours_docs_s": tot["ours"][0] / tot["ours"][2],
        "baseline_docs_s": tot["base"][0] / tot["base"][2],
        "ours_chunks": tot["ours"][1],
        "baseline_chunks": tot["base"][1],
        "ours_s": tot["ours"][2],
        "baseline_s": tot["base"][2],
        "ours_startup_s": startup,
        "resync_10pct_ours_s": resync,
        "resync_10pct_baseline_s": base_resync,
    }
    total["ratio"] = statistics.median(pair_ratios)
    total["ratio_runs"] = [round(x, 3) for x in pair_ratios]
    total["resync_ratio"] = base_resync / resync
    print(
        f"all     {'':6} | {total['ours_docs_s']:11.2f} {'':9} {'':6} | {total['baseline_docs_s']:11.2f} {'':9} {'':6} | {total['ratio']:5.2f}"
    )
    print(
        f"full ingest (median of {len(pair_ratios)}): ours {total['ours_s']:.1f} s ({total['ours_chunks']} chunks), baseline {total['baseline_s']:.1f} s ({total['baseline_chunks']} chunks): {total['ratio']:.2f}x (pairs: {', '.join(f'{x:.2f}' for x in pair_ratios)})"
    )
    print(
        f"re-sync after 10% changed: ours {resync:.1f} s, baseline (no ledger: everything again) {base_resync:.1f} s: {total['resync_ratio']:.1f}x"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"per_format": rows, "total": total, "docs_per_format": args.docs}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
