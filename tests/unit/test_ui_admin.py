"""The console's pure parts: job progress bars (escaped), connector settings forms, the access
rule shown in retrieval testing."""

from __future__ import annotations

import re
from types import SimpleNamespace

from appliance.domain import Chunk, Principal, ScoredChunk
from appliance.language import LANG_COOKIE
from tests.conftest import ROOT
from ui.admin.common import Console, Labels, table
from ui.admin.documents import DOC_HEADERS, DOC_WIDTHS, document_rows, short_ids
from ui.admin.progress import job_card, jobs_html
from ui.admin.quality import compare_html
from ui.admin.retrieval import access_rule, score_rows
from ui.admin.sources import option_rows, options_from
from ui.i18n import ONE, TEXTS


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
    assert access_rule(erin, _hit("c", ("*",), 1).chunk, "zh") == "所有已登录用户"
    assert access_rule(Principal("root", "admin"), _hit("c", (), 1).chunk, "zh") == "管理员：可读全部"


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
    assert record_rows(filter_records(records, "erin", "", "last hour", now))[0][5] == "<b>t</b>"


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
    english = refusal_html(erin, "en")
    assert "for admins and curators" in english and "&lt;b&gt;erin&lt;/b&gt; (employee)" in english
    assert "<b>erin" not in english
    assert "仅供管理员" in refusal_html(erin, "zh")
    assert "session has ended" in refusal_html(None, "en")


def _request(accept: str | None = None, cookie: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        headers={"accept-language": accept} if accept else {}, cookies={LANG_COOKIE: cookie} if cookie else {}
    )


def test_a_job_card_in_chinese_keeps_its_machine_status() -> None:
    card = job_card(_job(), "zh")
    assert 'data-status="running"' in card and "进行中" in card and "预计剩余 4 秒" in card
    assert "&lt;script&gt;" in card and "<script>" not in card


def test_the_console_language_is_the_switchs_cookie_else_the_browsers() -> None:
    console = Console(None, None)
    assert console.lang(_request("zh-CN,zh;q=0.9,en;q=0.5")) == "zh"
    assert console.lang(_request("de-DE,en;q=0.5")) == "en"
    assert console.lang(_request("zh-CN", cookie="en")) == "en"
    assert console.lang(_request("en-US", cookie="zh")) == "zh"
    assert console.lang(_request("zh-TW", cookie="fr")) == "zh"  # an unknown choice is ignored
    assert console.lang(SimpleNamespace(username="x")) == "en"  # no headers at all


def test_every_console_text_is_in_both_languages_with_the_same_placeholders() -> None:
    for key, english in TEXTS["en"].items():
        if key.endswith(ONE):  # English's "1 document": its placeholders are some of the plural's
            plural = TEXTS["en"][key.removesuffix(ONE)]
            assert set(re.findall(r"{(\w+)}", english)) <= set(re.findall(r"{(\w+)}", plural)), key
            continue
        chinese = TEXTS["zh"][key]
        assert set(re.findall(r"{(\w+)}", english)) == set(re.findall(r"{(\w+)}", chinese)), key
        if key.startswith("c_") and key not in ("c_h_rank", "c_h_bm25", "c_ev_shown"):
            assert chinese != english and re.search(r"[\u4e00-\u9fff]", chinese), key
    # Every key a console page names is in the catalogue (a missing one would fail at run time).
    used: set[str] = set()
    for path in (ROOT / "ui" / "admin").glob("*.py"):
        used |= set(re.findall(r"[\"'](c_[a-z0-9_]*[a-z0-9])[\"']", path.read_text(encoding="utf-8")))
    assert used and used <= set(TEXTS["en"]), used - set(TEXTS["en"])


def test_labels_relabel_components_and_tables_carry_their_headers() -> None:
    labels = Labels()
    box = labels(SimpleNamespace(), label="c_user_name", placeholder="c_docs_search")
    pick = labels(SimpleNamespace(), choices=[("c_w_hour", "last hour"), ("c_w_all", "all")])
    assert labels.components == [box, pick]
    zh = labels.updates("zh")
    assert zh[0]["label"] == "用户名" and zh[0]["placeholder"] == "搜索标题、路径或错误"
    assert zh[1]["choices"] == [("最近一小时", "last hour"), ("全部", "all")]
    assert labels.updates("en")[0]["label"] == "User name"
    assert table("zh", ["c_h_title", "c_h_status"], [["a", "b"]]) == {
        "headers": ["标题", "状态"],
        "data": [["a", "b"]],
    }


def test_documents_rows_lead_with_the_title_and_end_with_a_short_id() -> None:
    doc = {
        "id": "0123456789abcdef" * 2,
        "title": "Handbook",
        "uri": "file:///srv/handbook.md",
        "collection": "default",
        "status": "failed",
        "chunks": 0,
        "version": "1700000000000000000-1234",
        "error": "parse failed: " + "x" * 300,
        "updated_at": "2026-12-03T07:01:02.123456+00:00",
    }
    row = document_rows([doc])[0]
    assert row[:3] == ["Handbook", "failed", 0] and row[-1] == "01234567"
    assert row[3] == "2023-11-14 22:13 UTC" and row[4] == "2026-12-03 07:01"
    assert row[6] == doc["error"]  # whole: the table shows CELL_CHARS and the full text on a click
    assert len(DOC_HEADERS) == len(row) == len(DOC_WIDTHS)
    assert short_ids([doc]) == {"01234567": doc["id"]}
    assert document_rows([doc], "zh")[0][1] == "失败"


def test_an_evaluation_is_shown_against_the_previous_run() -> None:
    def result(hit1: float, answers: float | None, missed: list[str]) -> dict:
        items = [{"question": q, "doc": "<b>doc</b>", "rank": None, "answer_ok": None} for q in missed]
        return {
            "set": "kb",
            "questions": 10,
            "k": 5,
            "mode": "hybrid",
            "elapsed_s": 1.5,
            "retrieval": {"hit@1": hit1, "hit@k": 0.9, "mrr": 0.75},
            "generation": None if answers is None else {"answer_contains": answers, "citation_correct": 0.8},
            "items": items,
            "date": "2026-12-02",
            "result_file": "/data/eval/2026-12-03-kb.json",
        }

    before = result(0.7, 0.5, [])
    now = {
        **result(0.6, 0.6, ["<script>q</script>"]),
        "gate": {"passed": False, "max_drop": 0.02, "drops": [], "newly_missed": ["<script>q</script>"]},
    }
    shown = compare_html(now, before, "en")
    assert (
        'data-metric="hit@1"><td>hit@1</td><td>0.6000</td><td>0.7000</td><td class="kb-down">-0.1000' in shown
    )
    assert 'data-metric="answer_contains"' in shown and "+0.1000" in shown
    assert 'data-metric="hit@k"><td>hit@5</td>' in shown and "fell more than 0.02" in shown
    assert "<script>" not in shown and "&lt;script&gt;q" in shown and "2026-12-03-kb.json" in shown
    assert "/data/eval" not in shown  # the file's name, not where the server keeps it
    first = compare_html(result(0.6, None, []), None, "zh")
    assert "首次评测" in first and "answer_contains" not in first and "本次" in first
