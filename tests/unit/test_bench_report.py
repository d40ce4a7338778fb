"""The bench's results document: goals and `met` flags, the figures issue 19 asks for, and the
README's table generated from bench/results/latest.json rather than typed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import render, report
from bench.common import pct

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = (
    "ingest_chunks_per_s",
    "ingest_ratio_vs_langchain",
    "ingest_ratio_vs_llamaindex",
    "ttft_p50_ms",
    "decode_tokens_per_s",
    "decode_ratio_vs_raw",
    "retrieval_p50_ms_100k",
    "retrieval_p95_ms_100k",
    "retrieval_p95_ms_1m",
    "chat_p95_ms_at_8_users",
    "rate_429_at_16_users",
    "idle_rss_mb",
    "peak_rss_mb",
    "hit_at_1",
    "hit_at_5",
)


def test_a_missed_goal_says_by_how_much_and_what_bounds_it() -> None:
    f = report.figure(15.0, "chunks/s", (">=", 25), "the embedder alone: 20 chunks/s")
    assert f["met"] is False
    assert f["missed_by"].startswith("10 chunks/s (40%")
    assert f["bound"] == "the embedder alone: 20 chunks/s"
    met = report.figure(9.7, "ms", ("<=", 20), "without the filter: 9 ms")
    assert met["met"] is True and "missed_by" not in met and "bound" not in met


def test_a_figure_not_measured_carries_the_reason() -> None:
    f = report.figure(None, "ms", ("<=", 20), reason="quick run")
    assert f == {
        "value": None,
        "unit": "ms",
        "source": "",
        "goal": "<= 20",
        "met": None,
        "reason": "quick run",
    }


def test_every_required_figure_is_present_even_when_nothing_ran() -> None:
    parts = {"retrieval": {"error": "exit 1: boom"}, "retrieval_1m": {"skipped": "1M chunks not run: over"}}
    results = report.build(parts, {"date": "d", "mode": "quick"})
    for name in REQUIRED:
        assert name in results["figures"], name
    assert results["figures"]["retrieval_p95_ms_100k"]["reason"] == "bench/retrieval.py failed: exit 1: boom"
    assert results["figures"]["retrieval_p95_ms_1m"]["reason"] == "1M chunks not run: over"
    assert results["figures"]["idle_rss_mb"]["reason"] == "bench/serve_load.py did not run"


def test_figures_come_from_the_parts() -> None:
    search = [
        {
            "store": "edge",
            "chunks": 100_000,
            "filter": f,
            "p50_ms": p,
            "p95_ms": p * 2,
            "load_s": 1,
            "optimize_s": 2,
        }
        for f, p in (("none", 4.0), ("acl", 12.0))
    ]
    parts = {
        "retrieval": {"search": search, "embedding": []},
        "serve_load": {
            "sweep": [{"users": 8, "p95_ms": 900.0, "rate_429": 0.0, "failed_count": 0}],
            "rss": {"idle": {"total_mb": 1600.0, "per_process_mb": {"api": 1000.0, "llm_worker": 600.0}}},
            "peak": {"total_mb": 2000.0},
        },
    }
    figures = report.build(parts, {})["figures"]
    assert figures["retrieval_p95_ms_100k"]["value"] == 24.0
    assert figures["retrieval_p95_ms_100k"]["met"] is False
    assert "without the filter: p50 4.0 ms, p95 8.0 ms" in figures["retrieval_p95_ms_100k"]["bound"]
    assert figures["chat_p95_ms_at_8_users"]["value"] == 900.0
    assert figures["idle_rss_mb"]["met"] is False
    assert figures["idle_rss_mb"]["bound"] == "api 1000 MB, llm_worker 600 MB"


def test_ingestion_ratios_at_equal_chunking_carry_the_goal_and_their_defaults_a_second_row() -> None:
    def side(seconds: float, chunks: int) -> dict[str, dict[str, float]]:
        return {"zh": {"seconds": seconds, "chunks": chunks, "chunks_per_s": chunks / seconds}}

    parts = {
        "ingest": {
            "chunking": {"target_tokens": 200, "overlap_tokens": 30},
            "sides": {
                "ours": side(2.0, 300),
                "llamaindex": side(5.0, 290),
                "llamaindex_defaults": side(1.5, 60),
            },
            "ratios": {
                "llamaindex_zh": {"median": 2.5, "pairs": [2.4, 2.6]},
                "llamaindex_defaults_zh": {"median": 0.75, "pairs": [0.7, 0.8]},
            },
        }
    }
    figures = report.build(parts, {})["figures"]
    equal, defaults = (
        figures["ingest_ratio_zh_vs_llamaindex"],
        figures["ingest_ratio_zh_vs_llamaindex_defaults"],
    )
    assert equal["met"] is True and equal["goal"] == ">= 2"
    assert "200-token target, 30 overlap" in equal["context"] and "(150/s)" in equal["context"]
    assert defaults["value"] == 0.75 and defaults["goal"] is None and defaults["met"] is None
    assert "llamaindex_defaults 1.5 s for 60 chunks (40/s)" in defaults["bound"]
    assert "ingest_ratio_zh_vs_langchain_defaults" not in figures  # no such side in this run


def test_a_stopped_1m_run_reports_what_it_measured() -> None:
    stage = {
        "store": "edge",
        "chunks": 1_000_000,
        "loaded": 1_000_000,
        "load_s": 1288.1,
        "rss_mb_loaded": 6025.1,
        "load_points": [{"loaded": 100_000, "load_s": 41.4, "rss_mb": 730.7}],
    }
    parts = {"retrieval_1m": {"error": "stopped at the deadline", "stages": [stage]}}
    reason = report.build(parts, {})["figures"]["retrieval_p95_ms_1m"]["reason"]
    assert "stopped at the deadline" in reason
    assert "loaded 1000000 in 1288.1 s, RSS loaded 6025 MB" in reason and "100k: 41.4 s, 731 MB" in reason


def test_the_generated_section_replaces_only_what_lies_between_the_markers() -> None:
    text = f"intro\n{render.BEGIN}\nold\n{render.END}\noutro\n"
    once = render.replace_section(text, "new table")
    assert once == f"intro\n{render.BEGIN}\nnew table\n{render.END}\noutro\n"
    assert render.replace_section(once, "new table") == once
    assert render.replace_section("no markers\n", "x").endswith(f"{render.BEGIN}\nx\n{render.END}\n")


def test_percentile_interpolates() -> None:
    assert pct([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert pct([5.0], 95) == 5.0


@pytest.mark.skipif(not (ROOT / "bench" / "results" / "latest.json").exists(), reason="no results yet")
def test_the_readme_table_is_generated_from_latest_json() -> None:
    latest = json.loads((ROOT / "bench" / "results" / "latest.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert render.replace_section(readme, render.readme_section(latest)) == readme, (
        "README's headline figures differ from bench/results/latest.json: run `python bench/report.py`"
    )
