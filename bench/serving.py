"""Serving figures: our pool (llama.cpp worker process + OpenAI protocol) against raw
llama-cpp-python in the same run, and a concurrency sweep with 429 rates.

- TTFT and decode tok/s for the pipeline's prompt for 5 retrieved chunks of ~150 words: each
  source focused to its `rag.source_tokens` (48) most question-like tokens, as the pipeline does;
  raw vs pool, the ratios are the pool's overhead. Both keep llama.cpp's KV cache between
  requests, so both reuse the system-prompt prefix; the pool's worker also prefills it at start.
  The same with whole chunks (~800 prompt tokens) for comparison.
- Concurrency 1 -> 16 closed-loop clients against one worker (queue of 8): p50/p95 latency and
  the share of 429s.

Prints a table and writes its JSON part (bench/common.py). Run with `make bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from appliance.egress import install_guard, prepare_offline_env  # noqa: E402
from bench.common import add_out_arg, machine_info, write_json  # noqa: E402

TOPICS = ["turbine", "gearbox", "warranty", "maintenance", "blade", "bearing", "generator", "inspection",
          "safety", "policy", "vacation", "expense", "contract", "supplier", "invoice", "voltage"]  # fmt: skip


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(TOPICS) for _ in range(rng.randint(8, 16))).capitalize() + "."


def rag_messages(rng: random.Random, source_tokens: int = 0, count: Any = None) -> list[dict[str, str]]:
    """The pipeline's prompt for five retrieved chunks of ~150 words and a question: the fixed
    system prompt, the fenced sources (each focused to ``source_tokens`` tokens on the question,
    as the pipeline does; 0: whole chunks), the question."""
    from appliance.domain import Chunk, ScoredChunk
    from appliance.rag.pipeline import focus_sources
    from appliance.rag.prompts import build_messages

    hits = []
    for i in range(1, 6):
        text = " ".join(sentence(rng) for _ in range(12))
        name = f"document-{rng.randint(1, 999)}.pdf"
        chunk = Chunk(f"c{i}", f"d{i}", "bench", f"file:///{name}", f"Document {i} ({name})", text, 0, page=2)
        hits.append(ScoredChunk(chunk, 1.0 / i))
    question = f"What does the policy say about the {rng.choice(TOPICS)}?"
    if source_tokens:
        hits = focus_sources(question, hits, source_tokens, count)
    return build_messages(question, hits)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Raw:
    """llama-cpp-python in this process, the same settings as the worker: the baseline."""

    def __init__(self, path: Path, args: Any) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.args = args
        self.llm = Llama(
            model_path=str(path),
            n_ctx=args.context,
            n_threads=args.threads,
            n_batch=args.batch,
            verbose=False,
        )
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.fmt = Jinja2ChatFormatter(
            template=self.llm.metadata["tokenizer.chat_template"],
            eos_token=self.llm._model.token_get_text(eos),
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
        )

    def run(self, messages: list[dict[str, str]]) -> dict[str, float]:
        tokens = self.llm.tokenize(self.fmt(messages=messages).prompt.encode(), add_bos=False, special=True)
        start = time.perf_counter()
        first, n = 0.0, 0
        for chunk in self.llm.create_completion(
            prompt=tokens, max_tokens=self.args.max_tokens, temperature=0.0, stream=True
        ):
            if chunk["choices"][0].get("text"):
                n += 1
                last = time.perf_counter()
                first = first or last
        return {"ttft_ms": (first - start) * 1000, "n": n, "first": first, "end": last, "prompt": len(tokens)}

    def close(self) -> None:
        self.llm.close()


async def one(pool: Any, messages: list[dict[str, str]], params: Any, user: str) -> dict[str, float]:
    start = time.perf_counter()
    first, n = 0.0, 0
    tokens, last = 0, 0.0
    async for delta in pool.chat(messages, params, user=user):
        if delta.content:
            n += 1
            last = time.perf_counter()
            first = first or last
        tokens = delta.usage.get("completion_tokens", tokens)
    end = time.perf_counter()
    # The worker sends text in ~50 ms pieces, not one event per token: count the tokens it
    # reports. Decode is measured, on both sides, from the first to the last piece of text (the
    # first piece is one token); the end of the stream after it is in total_ms.
    return {
        "ttft_ms": (first - start) * 1000,
        "total_ms": (end - start) * 1000,
        "n": tokens or n,
        "first": first,
        "end": last,
    }


def paired(raw: Raw, pool: Any, prompts: list[list[dict[str, str]]], args: Any) -> dict[str, Any]:
    """Raw and pool answer the same prompts in alternating order, so both see the same machine
    load (this host is shared); the ratio of their medians is the pool's overhead."""
    from appliance.inference.base import GenerationParams

    params = GenerationParams(max_tokens=args.max_tokens, temperature=0.0)
    out: dict[str, Any] = {
        "raw": {"ttft_ms": [], "decode_tps": []},
        "pool": {"ttft_ms": [], "decode_tps": []},
    }
    prompt_tokens = []
    for i, messages in enumerate(prompts):
        sides = ["raw", "pool"] if i % 2 == 0 else ["pool", "raw"]
        for side in sides:
            r = raw.run(messages) if side == "raw" else asyncio.run(one(pool, messages, params, "bench"))
            if side == "raw":
                prompt_tokens.append(r["prompt"])
            out[side]["ttft_ms"].append(r["ttft_ms"])
            if r["n"] > 1:
                out[side]["decode_tps"].append((r["n"] - 1) / (r["end"] - r["first"]))
        print(
            f"  prompt {i + 1}/{len(prompts)}: raw ttft {out['raw']['ttft_ms'][-1]:.0f} ms, "
            f"pool ttft {out['pool']['ttft_ms'][-1]:.0f} ms",
            file=sys.stderr,
        )
    out["prompt_tokens"] = prompt_tokens
    return out


async def sweep(
    pool: Any, rng: random.Random, args: Any, source_tokens: int, count: Any
) -> list[dict[str, Any]]:
    from appliance.domain import Overloaded
    from appliance.inference.base import GenerationParams

    params = GenerationParams(max_tokens=args.sweep_tokens, temperature=0.0)
    rows = []
    for clients in args.concurrency:

        async def client(i: int) -> tuple[list[float], int]:
            done, refused = [], 0
            for _ in range(args.requests_per_client):
                try:
                    done.append(
                        (await one(pool, rag_messages(rng, source_tokens, count), params, f"user{i}"))[
                            "total_ms"
                        ]
                    )
                except Overloaded:
                    refused += 1
            return done, refused

        started = time.perf_counter()
        results = await asyncio.gather(*(client(i) for i in range(clients)))
        latencies = [x for done, _ in results for x in done]
        refused = sum(r for _, r in results)
        elapsed = time.perf_counter() - started
        total = clients * args.requests_per_client
        rows.append(
            {
                "clients": clients,
                "requests": total,
                "ok": len(latencies),
                "p50_ms": round(pct(latencies, 0.5), 1),
                "p95_ms": round(pct(latencies, 0.95), 1),
                "rate_429": round(refused / total, 3),
                "answers_per_s": round(len(latencies) / elapsed, 2),
            }
        )
        print(f"  clients {clients:2}: {rows[-1]}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=12, help="RAG prompts timed per side")
    parser.add_argument(
        "--source-tokens",
        type=int,
        default=48,
        help="tokens of each source in the prompt (rag.source_tokens)",
    )
    parser.add_argument("--whole-runs", type=int, default=4, help="prompts of whole chunks, for comparison")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sweep-tokens", type=int, default=24)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--context", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--queue", type=int, default=8)
    parser.add_argument("--note", default="", help="Recorded in the JSON, e.g. the machine's load.")
    add_out_arg(parser, "serving")
    args = parser.parse_args()

    prepare_offline_env()
    install_guard()
    from appliance.inference.backends.llamacpp import LlamaCppBackend
    from appliance.inference.pool import InferencePool
    from appliance.models import resolve_llm
    from appliance.rag.prompts import SYSTEM

    entry = resolve_llm("default", "smollm2-135m-instruct")
    rng = random.Random(11)

    raw = Raw(entry.path, args)
    backend = LlamaCppBackend(
        entry.name, entry.path, args.context, args.threads, args.batch,
        warm_messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": ""}],
    )  # fmt: skip
    count = backend.count_tokens
    focused = [rag_messages(rng, args.source_tokens, count) for _ in range(args.runs)]
    whole = [rag_messages(rng) for _ in range(args.whole_runs)]
    pool = InferencePool([backend], max_queue=args.queue, queue_timeout_s=600)
    pool.start()
    try:
        print(f"focused sources ({args.source_tokens} tokens each, the pipeline's default):", file=sys.stderr)
        pair = paired(raw, pool, focused, args)
        print("whole chunks (rag.source_tokens = 0):", file=sys.stderr)
        pair_whole = paired(raw, pool, whole, args) if whole else None
        raw.close()
        rows = asyncio.run(sweep(pool, rng, args, args.source_tokens, count))
    finally:
        pool.close()
    raw_side, ours = pair["raw"], pair["pool"]

    def med(xs: list[float]) -> float:
        return round(statistics.median(xs), 1) if xs else float("nan")

    result = {
        "machine": machine_info(),
        "settings": {
            "threads": args.threads,
            "batch": args.batch,
            "context": args.context,
            "note": args.note,
        },
        "load_average": list(os.getloadavg()),
        "prompt_tokens_median": statistics.median(pair["prompt_tokens"]),
        "raw": {"ttft_p50_ms": med(raw_side["ttft_ms"]), "decode_tps_p50": med(raw_side["decode_tps"])},
        "pool": {"ttft_p50_ms": med(ours["ttft_ms"]), "decode_tps_p50": med(ours["decode_tps"])},
        "sweep": rows,
        "source_tokens": args.source_tokens,
    }
    if pair_whole:
        result["whole_chunks"] = {
            "prompt_tokens_median": statistics.median(pair_whole["prompt_tokens"]),
            "raw": {"ttft_p50_ms": med(pair_whole["raw"]["ttft_ms"])},
            "pool": {"ttft_p50_ms": med(pair_whole["pool"]["ttft_ms"])},
        }
    result["pool_over_raw"] = {
        "ttft": round(result["pool"]["ttft_p50_ms"] / result["raw"]["ttft_p50_ms"], 3),
        "decode": round(result["pool"]["decode_tps_p50"] / result["raw"]["decode_tps_p50"], 3),
    }
    print(
        f"\nRAG prompt, 5 sources of {args.source_tokens} tokens: {result['prompt_tokens_median']:.0f} tokens, "
        f"{args.max_tokens} generated, {args.runs} runs"
    )
    print(f"{'':22}{'TTFT p50 ms':>14}{'decode tok/s':>14}")
    for side in ("raw", "pool"):
        print(f"{side:22}{result[side]['ttft_p50_ms']:>14}{result[side]['decode_tps_p50']:>14}")
    print(f"{'pool / raw':22}{result['pool_over_raw']['ttft']:>14}{result['pool_over_raw']['decode']:>14}")
    if pair_whole:
        w = result["whole_chunks"]
        print(
            f"whole chunks ({w['prompt_tokens_median']:.0f} tokens): TTFT p50 raw {w['raw']['ttft_p50_ms']} ms, "
            f"pool {w['pool']['ttft_p50_ms']} ms"
        )
    print(
        f"\n{'clients':>8}{'requests':>10}{'ok':>5}{'p50 ms':>10}{'p95 ms':>10}{'429 rate':>10}{'ans/s':>8}"
    )
    for r in rows:
        print(
            f"{r['clients']:>8}{r['requests']:>10}{r['ok']:>5}{r['p50_ms']:>10}{r['p95_ms']:>10}"
            f"{r['rate_429']:>10}{r['answers_per_s']:>8}"
        )
    write_json(args.out, result)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
