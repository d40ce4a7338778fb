"""The console's pure parts: job progress bars (escaped), connector settings forms, the access
rule shown in retrieval testing."""

from __future__ import annotations

from appliance.domain import Chunk, Principal, ScoredChunk
from ui.admin.progress import job_card, jobs_html
from ui.admin.retrieval import access_rule, score_rows
from ui.admin.sources import option_rows, options_from


def _job(**over: object) -> dict:
    job = {
        "id": "j1",
        "kind": "sync",
        "status": "running",
        "collection": "default",
        "source_id": "s1",
        "detail": {"source": {"spec": "/srv/<b>docs</b>", "kind": "filesystem", "options": {}}},
        "progress": {
            "seen": 4,
            "done": 1,
            "failed": 1,
            "chunks": 7,
            "current": "file:///srv/<script>x</script>.md",
            "rate_docs_s": 0.5,
            "rate_chunks_s": 1.75,
            "eta_s": 4.0,
        },
        "result": None,
        "error": None,
    }
    job.update(over)
    return job


def test_a_running_job_shows_its_share_counts_and_eta_escaped() -> None:
    html = job_card(_job())
    assert 'data-status="running"' in html and 'aria-valuenow="50"' in html and "width:50.0%" in html
    assert "items 2/4" in html and "chunks 7" in html and "ETA 4 s" in html and "failed 1" in html
    assert "<script>" not in html and "&lt;script&gt;" in html and "<b>docs" not in html


def test_a_finished_job_is_full_and_lists_failures_with_reasons() -> None:
    result = {"added": 3, "updated": 0, "unchanged": 0, "deleted": 0, "chunks": 9}
    result["failed"] = [{"uri": "file:///a.pdf", "error": "<img src=x> bad PDF"}]
    html = job_card(_job(status="succeeded", result=result))
    assert 'aria-valuenow="100"' in html and "added 3" in html and "failed 1" in html
    assert "file:///a.pdf" in html and "&lt;img src=x&gt; bad PDF" in html and "<img" not in html
    assert "No ingestion jobs" in jobs_html([])


def test_connector_settings_form_round_trips_only_what_changed() -> None:
    rows = dict(option_rows("web"))
    assert "start_urls" in rows and rows["max_pages"] == "200"
    assert "allow_private" not in rows and "cache_dir" not in rows and "acl" not in rows  # settings-only
    changed = options_from(
        "web", [["start_urls", "http://127.0.0.1:9/"], ["max_pages", "200"], ["max_depth", "1"]]
    )
    assert changed == {"start_urls": "http://127.0.0.1:9/", "max_depth": "1"}
    stored = dict(option_rows("filesystem", {"root": "/srv/x", "include": ["*.md", "*.txt"]}))
    assert stored["root"] == "/srv/x" and stored["include"] == "*.md, *.txt"


def _hit(chunk_id: str, acl: tuple[str, ...], score: float) -> ScoredChunk:
    chunk = Chunk(chunk_id, "d1", "default", "file:///h.md", "Handbook", "text " * 80, 0, acl=acl)
    return ScoredChunk(chunk, score)


def test_the_access_rule_names_the_entry_that_let_a_chunk_through() -> None:
    erin = Principal("erin", "employee", ("finance",))
    assert access_rule(erin, _hit("c", ("group:finance", "user:bob"), 1).chunk) == "group:finance"
    assert access_rule(erin, _hit("c", ("*",), 1).chunk) == "everyone signed in"
    assert access_rule(Principal("root", "admin"), _hit("c", ("user:bob",), 1).chunk).startswith("admin")


def test_score_rows_join_the_legs_by_chunk() -> None:
    erin = Principal("erin", "employee")
    legs = {
        "hybrid": [_hit("a", (), 0.03), _hit("b", (), 0.02)],
        "dense": [_hit("a", (), 0.81)],
        "bm25": [_hit("b", (), 3.5), _hit("a", (), 1.25)],
    }
    rows = score_rows(erin, legs, 5)
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][3:6] == ["0.0300", "0.8100", "1.2500"] and rows[1][4] == "—"
    assert rows[0][7].endswith("…")


def test_audit_records_filter_by_user_action_and_time_newest_first() -> None:
    import json
    from datetime import UTC, datetime

    from ui.admin.audit import audit_records, filter_records, record_rows

    lines = [
        {
            "seq": 1,
            "ts": "2026-12-01T09:00:00+00:00",
            "actor": "ada",
            "action": "POST /api/v1/users",
            "target": "t",
        },
        {"seq": 2, "ts": "2026-12-02T09:00:00+00:00", "actor": "ada", "action": "search", "target": "t"},
        {"seq": 3, "ts": "2026-12-02T09:30:00+00:00", "actor": "erin", "action": "ask", "target": "<b>t</b>"},
    ]
    export = "\n".join(json.dumps(r) for r in lines) + '\n{"trailer": {"records": 3}}\n'
    records = audit_records(export)
    assert [r["seq"] for r in records] == [1, 2, 3]
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert [r["seq"] for r in filter_records(records, "", "", "all", now)] == [3, 2, 1]
    assert [r["seq"] for r in filter_records(records, "ADA", "", "last day", now)] == [2]
    assert [r["seq"] for r in filter_records(records, "", "users", "all", now)] == [1]
    assert record_rows(filter_records(records, "erin", "", "last hour", now))[0][4] == "<b>t</b>"


def test_usage_totals_per_subject_largest_first() -> None:
    from ui.admin.usage import usage_frame

    rows = [
        {"day": "2026-12-01", "subject": "user:a", "requests": 2, "total_tokens": 10},
        {"day": "2026-12-02", "subject": "user:b", "requests": 1, "total_tokens": 50},
        {"day": "2026-12-02", "subject": "user:a", "requests": 3, "total_tokens": 15},
    ]
    frame = usage_frame(rows)
    assert frame.to_dict("records") == [
        {"subject": "user:b", "tokens": 50, "requests": 1},
        {"subject": "user:a", "tokens": 25, "requests": 5},
    ]


def test_metrics_history_keeps_the_mean_of_each_interval_per_model() -> None:
    from datetime import UTC, datetime

    from appliance.observability import Metrics
    from ui.admin.pool import MetricsHistory

    metrics = Metrics()
    history = MetricsHistory(metrics.registry, lambda: ["m"])
    history.sample(datetime(2026, 12, 2, 10, 0, tzinfo=UTC))  # the baseline
    assert history.frame("ttft_s").empty
    for value in (0.2, 0.4):
        metrics.ttft.labels("m").observe(value)
    metrics.decode_rate.labels("m").observe(12.0)
    history.sample(datetime(2026, 12, 2, 10, 1, tzinfo=UTC))
    history.sample(datetime(2026, 12, 2, 10, 2, tzinfo=UTC))  # nothing observed: no point
    ttft = history.frame("ttft_s")
    assert len(ttft) == 1 and abs(ttft["value"][0] - 0.3) < 1e-9 and ttft["model"][0] == "m"
    assert history.frame("tokens_per_s")["value"].tolist() == [12.0]


def test_the_refusal_speaks_the_browsers_language_and_escapes_names() -> None:
    from ui.admin.common import refusal_html

    erin = Principal("<b>erin</b>", "employee")
    english = refusal_html(erin, "en-US,en;q=0.9")
    assert "for admins and curators" in english and "&lt;b&gt;erin&lt;/b&gt; (employee)" in english
    assert "<b>erin" not in english
    assert "仅供管理员" in refusal_html(erin, "zh-CN,zh;q=0.9")
    assert "session has ended" in refusal_html(None, "en")
