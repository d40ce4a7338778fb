"""One run's results from the bench scripts' JSON parts: the headline figures, each with its goal, a
`met` flag and, where missed, by how much and what bounds it; the side-by-side comparisons and
the scale curves. bench/render.py writes them out (JSON, markdown, plots, README, docs).

`python bench/report.py` regenerates the README's and docs/benchmarks.md's generated sections
from bench/results/latest.json (no benchmark runs); `--rebuild` recomputes the last run's results
from its parts first (after a change to this file).
"""

from __future__ import annotations

import argparse
import operator
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import RESULTS, read_json  # noqa: E402

# Goals on 2 cores (issue 19). Figures without a goal are reported with goal None and met None.
OPS = {">=": operator.ge, "<=": operator.le}
PARTS = (
    "security",
    "skeleton",
    "retrieval",
    "retrieval_1m",
    "ingest",
    "profile_ingest",
    "quality",
    "answers",
    "serving",
    "serve_load",
)


def figure(
    value: float | None,
    unit: str,
    goal: tuple[str, float] | None = None,
    bound: str | None = None,
    reason: str | None = None,
    source: str = "",
) -> dict[str, Any]:
    """A figure with its goal; where the goal is missed, by how much and what bounds it. A figure
    that was not measured carries ``reason`` instead of a value."""
    out: dict[str, Any] = {"value": value, "unit": unit, "source": source}
    out["goal"] = f"{goal[0]} {goal[1]:g}" if goal else None
    if value is None:
        out.update(met=None, reason=reason or "not measured")
        return out
    if goal is None:
        out["met"] = None
    else:
        op, target = goal
        out["met"] = bool(OPS[op](value, target))
        if not out["met"]:
            gap = abs(target - value)
            out["missed_by"] = f"{gap:.3g} {unit} ({gap / target:.0%} of the goal)".replace("  ", " ")
    if bound and (goal is None or not out["met"]):
        out["bound"] = bound
    elif bound:
        out["context"] = bound
    return out


def _err(parts: dict[str, Any], name: str) -> str | None:
    part = parts.get(name)
    script = "bench/retrieval.py at 1M chunks" if name == "retrieval_1m" else f"bench/{name}.py"
    if part is None:
        return f"{script} did not run"
    if "error" in part:
        return f"{script} failed: {part['error']}"
    if "skipped" in part:
        return part["skipped"]
    return None


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    return None


def embed_rate(parts: dict[str, Any]) -> tuple[float, int] | None:
    """The embedder alone (bench/retrieval.py), in the dtype the appliance picks on this CPU:
    chunks/s and tokens per chunk, 2 threads."""
    rows = (parts.get("retrieval") or {}).get("embedding") or []
    amx = ((parts.get("retrieval") or {}).get("machine") or {}).get("flags", {}).get("amx_bf16")
    row = _find(rows, backend="torch bf16" if amx else "torch fp32", threads=2)
    return (row["chunks_per_s"], row["tokens_per_chunk"]) if row else None


def ingest_figures(parts: dict[str, Any]) -> dict[str, Any]:
    src = "bench/ingest.py"
    err = _err(parts, "ingest")
    ing = parts.get("ingest") or {}
    rate = embed_rate(parts)
    rate_text = f"the embedder alone: {rate[0]:g} chunks/s of {rate[1]} tokens" if rate else ""
    out = {}
    value = ing.get("ours_chunks_per_s")
    out["ingest_chunks_per_s"] = figure(value, "chunks/s", (">=", 25), rate_text, err, src)
    sides = ing.get("sides", {})
    chunking = ing.get("chunking") or {}
    equal = (
        f"baselines at our chunking ({chunking['target_tokens']}-token target, "
        f"{chunking['overlap_tokens']} overlap, MiniLM tokens)"
        if chunking
        else ""
    )
    for key, side, label, names in (
        ("ingest_ratio_vs_langchain", "langchain", "formats", None),
        ("ingest_ratio_vs_llamaindex", "llamaindex", "text", None),
        ("ingest_ratio_pydoc_vs_langchain", "langchain", "pydoc", ("pydoc",)),
        ("ingest_ratio_pydoc_vs_llamaindex", "llamaindex", "pydoc", ("pydoc",)),
        ("ingest_ratio_zh_vs_langchain", "langchain", "zh", ("zh",)),
        ("ingest_ratio_zh_vs_llamaindex", "llamaindex", "zh", ("zh",)),
    ):
        # The goal is at equal chunking; their defaults (fewer, larger, truncated chunks) are the
        # second row, without a goal.
        for suffix, goal in (("", (">=", 2.0)), ("_defaults", None)):
            who = side + suffix
            r = (ing.get("ratios") or {}).get(f"{who}_{label}")
            if suffix and who not in sides:
                continue
            bound = None
            if r and who in sides:
                chosen = names or [n for n in sides[who] if n in sides["ours"]]
                if label == "formats":
                    chosen = [n for n in chosen if n not in ("pydoc", "zh")]
                ours_s = sum(sides["ours"][n]["seconds"] for n in chosen)
                ours_c = sum(sides["ours"][n]["chunks"] for n in chosen)
                base_s = sum(sides[who][n]["seconds"] for n in chosen)
                base_c = sum(sides[who][n]["chunks"] for n in chosen)
                bound = (
                    f"ours {ours_s:.1f} s for {ours_c} chunks ({ours_c / ours_s:.0f}/s), "
                    f"{who} {base_s:.1f} s for {base_c} chunks ({base_c / base_s:.0f}/s)"
                )
                if not suffix and equal:
                    bound = f"{equal}; {bound}"
                if suffix and base_c < ours_c:
                    bound += (
                        f"; it embeds {base_c} chunks to our {ours_c}: its chunks are larger, and "
                        "MiniLM reads the first 256 tokens of each (the rest is not searchable)"
                    )
                elif rate:
                    # The embedder's rate is for chunks of rate[1] tokens; ours are at most the
                    # chunking target, and embedding time is about linear in tokens at this size.
                    tokens = min(rate[1], chunking.get("target_tokens") or rate[1])
                    floor = ours_c / rate[0] * tokens / rate[1]
                    bound += (
                        f"; embedding our chunks alone takes about {floor:.1f} s ({rate[0]:g} chunks/s "
                        f"of {rate[1]} tokens, scaled to {tokens}), so about {base_s / floor:.2f}x at "
                        "most without embedding fewer chunks"
                    )
                bound += f"; pairs {r['pairs']}"
            reason = err or (None if r else f"no {who} run on the {label} corpus")
            out[key + suffix] = figure(r["median"] if r else None, "x", goal, bound, reason, src)
    return out


def serving_figures(parts: dict[str, Any]) -> dict[str, Any]:
    src = "bench/serving.py"
    err = _err(parts, "serving")
    s = parts.get("serving") or {}
    raw, pool = s.get("raw", {}), s.get("pool", {})
    tokens = s.get("prompt_tokens_median")
    return {
        "ttft_p50_ms": figure(
            pool.get("ttft_p50_ms"),
            "ms",
            ("<=", 1000),
            f"raw llama-cpp-python on the same prompt ({tokens} tokens): {raw.get('ttft_p50_ms')} ms",
            err,
            src,
        ),
        "decode_tokens_per_s": figure(
            pool.get("decode_tps_p50"),
            "tokens/s",
            None,
            f"raw llama-cpp-python: {raw.get('decode_tps_p50')} tokens/s",
            err,
            src,
        ),
        "decode_ratio_vs_raw": figure(
            (s.get("pool_over_raw") or {}).get("decode"),
            "x",
            (">=", 0.9),
            f"raw decode {raw.get('decode_tps_p50')} tokens/s",
            err,
            src,
        ),
    }


def stage_text(stages: list[dict[str, Any]]) -> str:
    """What the store measured per size: load and index-build time, RSS after each stage."""
    out = []
    for x in stages:
        if x.get("store") != "edge":
            continue
        text = f"{x['chunks']}: loaded {x.get('loaded', 0)} in {x.get('load_s', '?')} s"
        for key, label in (("rss_mb_loaded", "RSS loaded"), ("rss_mb_searched", "RSS searched")):
            if x.get(key) is not None:
                text += f", {label} {x[key]:.0f} MB"
        if x.get("optimize_s") is not None:
            text += f", index build {x['optimize_s']} s (child peak {x.get('build_peak_rss_mb')} MB)"
        points = x.get("load_points") or []
        if points:
            text += (
                " ("
                + ", ".join(f"{p['loaded'] // 1000}k: {p['load_s']} s, {p['rss_mb']:.0f} MB" for p in points)
                + ")"
            )
        out.append(text)
    return "; ".join(out)


def retrieval_figures(parts: dict[str, Any]) -> dict[str, Any]:
    src = "bench/retrieval.py"
    rows = [r for name in ("retrieval", "retrieval_1m") for r in (parts.get(name) or {}).get("search", [])]
    out = {}
    for n, label in ((100_000, "100k"), (1_000_000, "1m")):
        acl = _find(rows, store="edge", chunks=n, filter="acl")
        plain = _find(rows, store="edge", chunks=n, filter="none")
        err = _err(parts, "retrieval_1m" if n == 1_000_000 else "retrieval")
        reason = (
            err or f"not measured at {n} chunks in this run (sizes: {sorted({r['chunks'] for r in rows})})"
        )
        if n == 1_000_000 and (stages := (parts.get("retrieval_1m") or {}).get("stages")):
            reason += f"; measured before it stopped: {stage_text(stages)}"
        bound = (
            f"without the filter: p50 {plain['p50_ms']} ms, p95 {plain['p95_ms']} ms; "
            f"loading {plain['load_s']} s, index build {plain['optimize_s']} s"
            if plain
            else None
        )
        goal = ("<=", 20) if n == 100_000 else None
        if n == 100_000:
            out[f"retrieval_p50_ms_{label}"] = figure(acl and acl["p50_ms"], "ms", None, bound, reason, src)
        out[f"retrieval_p95_ms_{label}"] = figure(acl and acl["p95_ms"], "ms", goal, bound, reason, src)
    return out


def serve_figures(parts: dict[str, Any]) -> dict[str, Any]:
    src = "bench/serve_load.py"
    err = _err(parts, "serve_load")
    s = parts.get("serve_load") or {}
    sweep = s.get("sweep", [])
    at8, at16 = _find(sweep, users=8), _find(sweep, users=16)
    failed = sum(r.get("failed_count", 0) for r in sweep) if sweep else None
    idle = (s.get("rss") or {}).get("idle", {})
    peak = s.get("peak", {})

    def per_process(x: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v:g} MB" for k, v in (x.get("per_process_mb") or {}).items())

    return {
        "chat_p95_ms_at_8_users": figure(
            at8 and at8["p95_ms"], "ms", None, None, err or "8 users not in this run's sweep", src
        ),
        "rate_429_at_16_users": figure(
            at16 and at16["rate_429"], "share", None, None, err or "16 users not in this run", src
        ),
        "chat_failed_requests": figure(
            failed, "requests", ("<=", 0), "overload must be a 429, never another error", err, src
        ),
        "idle_rss_mb": figure(idle.get("total_mb"), "MB", ("<=", 1536), per_process(idle), err, src),
        "peak_rss_mb": figure(peak.get("total_mb"), "MB", None, per_process(peak), err, src),
    }


def quality_figures(parts: dict[str, Any]) -> dict[str, Any]:
    src = "bench/answers.py"
    err = _err(parts, "answers")
    a = parts.get("answers") or {}
    ret = a.get("retrieval", {})
    out = {
        "hit_at_1": figure(ret.get("hit@1"), "share", None, None, err, src),
        "hit_at_5": figure(ret.get("hit@5"), "share", None, None, err, src),
    }
    for mode, m in (a.get("modes") or {"extractive": {}, "grounded": {}}).items():
        for key in ("answer_contains", "citation_correct"):
            out[f"{key}_{mode}"] = figure(m.get(key), "share", None, None, err, src)
    return out


def ingest_bound(parts: dict[str, Any], search: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sizes the whole pipeline is not run at: about how long they would take, at the whole
    pipeline's rate at the largest size run, beside the store's measured load and index build
    there (the embedder alone, in the embedding table, is the bound of that rate)."""
    scale = (parts.get("ingest") or {}).get("scale", [])
    if not scale:
        return []
    largest = max(scale, key=lambda r: r["chunks"])
    rate = largest["chunks"] / largest["seconds"]
    done = {r["target_chunks"] for r in scale}
    out = []
    for n in (1_000, 10_000, 100_000, 1_000_000):
        if n in done:
            continue
        store = _find(search, store="edge", chunks=n, filter="none")
        out.append(
            {
                "chunks": n,
                "pipeline_s_about": round(n / rate),
                "store_s": store["load_s"] + store["optimize_s"] if store else None,
                "why_not_run": f"about {n / rate / 60:.0f} min at the {largest['chunks']}-chunk run's "
                f"{rate:.0f} chunks/s, most of it embedding",
            }
        )
    return out


# The product's fusion (retrieval.fusion minmax, BM25 weight 1.25) among bench/quality.py's modes.
PRODUCT_FUSION = "minmax-b1.25"


def quality_set_figures(parts: dict[str, Any]) -> dict[str, Any]:
    """Hybrid hit@1 per labelled set (bench/quality.py), against its better single leg."""
    src = "bench/quality.py"
    err = _err(parts, "quality")
    sets = (parts.get("quality") or {}).get("sets", {})
    out = {}
    for name in ("kb", "pydoc", "zh"):
        modes = (sets.get(name) or {}).get("modes", {})
        hybrid = modes.get(PRODUCT_FUSION, {}).get("hit@1")
        legs = [modes[m]["hit@1"] for m in ("dense", "bm25") if m in modes]
        goal = (">=", max(legs)) if legs and hybrid is not None else None
        bound = f"dense {modes['dense']['hit@1']}, BM25 {modes['bm25']['hit@1']}" if len(legs) == 2 else None
        reason = err or f"no {name} set in this run"
        out[f"hit_at_1_{name}_hybrid"] = figure(hybrid, "share", goal, bound, reason, src)
    return out


def build(parts: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The results document of one run: ``meta`` (date, host, mode, machine, duration) and the
    figures, comparisons and curves taken from the scripts' ``parts``."""
    figures: dict[str, Any] = {}
    for make in (
        ingest_figures,
        serving_figures,
        retrieval_figures,
        serve_figures,
        quality_figures,
        quality_set_figures,
    ):
        figures.update(make(parts))
    ing = parts.get("ingest") or {}
    search = [r for n in ("retrieval", "retrieval_1m") for r in (parts.get(n) or {}).get("search", [])]
    s = parts.get("serving") or {}
    return {
        **meta,
        "figures": figures,
        "side_by_side": {
            "ingestion": {
                "corpus_mb": ing.get("corpus_mb"),
                "sides": ing.get("sides"),
                "ratios": ing.get("ratios"),
            },
            "ingestion_resync_10pct": ing.get("resync_10pct"),
            "retrieval_labelled_set": ing.get("retrieval_sides"),
            "retrieval_synthetic": [r for r in search if r["store"] == "qdrant-local"],
            "serving": {k: s.get(k) for k in ("prompt_tokens_median", "raw", "pool", "whole_chunks")},
        },
        "curves": {
            "ingest_scale": ing.get("scale", []),
            "ingest_scale_bound": ingest_bound(parts, search),
            "store_load": [r for r in search if r["store"] == "edge" and r["filter"] == "none"],
            "retrieval_scale": [r for r in search if r["store"] == "edge"],
            "store_stages": [
                x for n in ("retrieval", "retrieval_1m") for x in (parts.get(n) or {}).get("stages", [])
            ],
            "chat_concurrency": (parts.get("serve_load") or {}).get("sweep", []),
            "pool_concurrency": s.get("sweep", []),
            "rss": (parts.get("serve_load") or {}).get("rss", {}),
            "embedding": (parts.get("retrieval") or {}).get("embedding", []),
        },
        "profile": (parts.get("profile_ingest") or {}).get("corpora", []),
        "quality": {k: v for k, v in (parts.get("answers") or {}).items() if k != "examples"},
        "security": parts.get("security"),
        "skeleton": parts.get("skeleton"),
        "errors": {n: e for n in PARTS if (e := _err(parts, n)) and parts.get(n) is not None},
    }


# What bench/run.py records about a run itself, beside the figures built from its parts.
META = (
    "date",
    "commit",
    "host",
    "mode",
    "machine",
    "load_avg_end",
    "duration_s",
    "steps_s",
    "steps_reused",
    "note",
)


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate the README and docs from a results file.")
    parser.add_argument("--results", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="recompute the results of the last run from its parts (bench/results/parts/all.json) "
        "with this code, keeping the run's date, machine and timings; then its files and the docs",
    )
    args = parser.parse_args()
    from bench.render import update_docs, write_run

    if args.rebuild:
        from bench.common import PARTS as PARTS_DIR

        old = read_json(args.results)
        results = build(read_json(PARTS_DIR / "all.json"), {k: old[k] for k in META if k in old})
        stem = f"{old['date'][:10]}-{old['host']}" + ("-quick" if old["mode"] == "quick" else "")
        print(f"rebuilt {write_run(results, stem)}")
        return
    for path in update_docs(read_json(args.results)):
        print(f"updated {path}")


if __name__ == "__main__":
    main()
