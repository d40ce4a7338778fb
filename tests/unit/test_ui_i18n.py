"""What a person reads in the console and the chat: counts that agree with their number in
English ("1 document"), and stored values (source kinds, job kinds and states, roles, audit
actions) shown in the reader's language while tables, filters and forms keep the stored value."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import get_args

import connectors
from appliance.ingestion.jobs import ACTIVE
from appliance.vectorstore.base import SearchMode
from ui.admin.audit import HEADERS, action_text, filter_records, outcome, record_rows
from ui.admin.documents import STATUSES, document_rows, status_choices
from ui.admin.identity import ROLES, key_rows, user_rows
from ui.admin.pool import replica_rows
from ui.admin.progress import job_card
from ui.admin.sources import KINDS, source_rows
from ui.i18n import ONE, TEXTS, stored_value, t, term, term_choices


def test_a_count_of_one_reads_singular_in_english_and_needs_no_plural_in_chinese() -> None:
    assert t("en", "c_docs_info", n=1, page=1, pages=1) == "1 document · page 1 of 1"
    assert t("en", "c_docs_info", n=2, page=1, pages=1) == "2 documents · page 1 of 1"
    assert t("en", "c_docs_info", n=0, page=1, pages=1).startswith("0 documents")
    assert t("en", "c_rt_found", n=1, user="ada", role="admin", collection="kb").startswith("1 chunk for")
    assert t("en", "c_chain_ok", n=1) == "The chain is intact: 1 record verified."
    assert t("en", "c_retrying", n=1) == "Retrying 1 failed document."
    assert t("en", "c_audit_found", n=1, shown=1) == "1 record matches; it is shown."
    assert t("en", "c_eval_about", n=1, set="kb", k=5, mode="hybrid", s=1.5).startswith("Set kb: 1 question,")
    assert t("en", "c_test_ok", n=1) == "Connected: the first item (nothing was ingested)."
    assert t("zh", "c_docs_info", n=1, page=1, pages=1) == "共 1 个文档 · 第 1 / 1 页"
    assert t("fr", "c_chain_ok", n=1) == "The chain is intact: 1 record verified."  # unknown: English


def test_every_english_count_of_a_noun_has_its_singular() -> None:
    """Any text that says "{n} <plural noun>" (or "the first {n} items") has a ``_one`` entry."""
    english = TEXTS["en"]
    counted = {
        key
        for key, text in english.items()
        if not key.endswith(ONE) and re.search(r"\{n\} (?:\w+ )?\w+s\b", text)
    }
    assert {"c_docs_info", "c_rt_found", "c_chain_ok", "c_audit_found", "c_retrying", "c_test_ok"} <= counted
    assert {key for key in counted if key + ONE not in english} == set()
    assert not [key for key in TEXTS["zh"] if key.endswith(ONE)]


def test_stored_values_have_a_name_in_both_languages() -> None:
    covered = {
        "c_sk_": list(connectors.REGISTRY),
        "c_jk_": ["ingest", "sync", "upload", "reindex"],
        "c_js_": [*ACTIVE, "succeeded", "failed", "cancelled", "interrupted"],
        "c_st_": STATUSES[1:],
        "c_role_": ["", *ROLES],
        "c_mode_": list(get_args(SearchMode)),
    }
    for prefix, values in covered.items():
        for value in values:
            assert prefix + value in TEXTS["en"] and prefix + value in TEXTS["zh"], prefix + value
    assert term("zh", "c_sk_", "filesystem") == "文件夹" and term("en", "c_sk_", "filesystem") == "filesystem"
    assert term("zh", "c_sk_", "ftp") == "ftp"  # a value without a name is shown as it is stored
    assert term_choices("c_sk_", KINDS)[0] == ("c_sk_filesystem", "filesystem")
    assert status_choices()[1] == ("c_st_indexed", "indexed")


def test_console_tables_show_stored_values_in_chinese_and_keep_ids() -> None:
    source = SimpleNamespace(
        id="src1",
        kind="web",
        spec="https://intranet/wiki",
        options={},
        collection="kb",
        acl=[],
        interval_s=0,
        last_sync_at=None,
        last_job_id="j1",
    )
    assert source_rows([source], "zh")[0][:2] == ["src1", "网站"]
    assert source_rows([source])[0][:2] == ["src1", "web"]
    job = {"id": "j1", "kind": "sync", "status": "queued", "collection": "kb", "progress": None}
    card = job_card(job, "zh")
    assert "<b>同步</b>" in card and "排队中" in card and 'data-status="queued"' in card
    assert "<b>sync</b>" in job_card(job, "en")
    running = {**job, "status": "running", "progress": {"seen": 2, "done": 1, "eta_s": 125}}
    assert "预计剩余 2 分 05 秒" in job_card(running, "zh") and "ETA 2 min 05 s" in job_card(running)
    user = {"name": "ada", "role": "curator", "groups": [], "disabled": False, "has_password": True}
    row = user_rows([{**user, "created_at": None}], "zh")[0]
    assert row[:2] == ["ada", "内容管理员"] and row[3:5] == ["否", "是"]  # role; disabled, password set
    assert stored_value("c_role_", row[1], ROLES) == "curator"  # a selected row fills the form
    assert stored_value("c_role_", "curator", ROLES) == "curator"
    key = {
        "id": 3,
        "prefix": "kb_x",
        "user": "ada",
        "role": "app",
        "collections": None,
        "routes": ["/api/v1/ask"],
        "expires_at": None,
        "revoked_at": None,
        "active": True,
    }
    assert key_rows([key], "zh")[0][3:6] == ["应用", "（全部）", "/api/v1/ask"]
    assert key_rows([key], "zh")[0][-1] == "是" and key_rows([key])[0][4:] == [
        "(all)",
        "/api/v1/ask",
        "",
        "",
        "yes",
    ]
    health = {
        "m": {"replicas": [{"healthy": False, "outstanding": 0, "url": "u"}], "capacity": 4, "waiting": 0}
    }
    assert replica_rows(health, "zh")[0][2] == "否" and replica_rows(health)[0][2] == "no"
    doc = {
        "id": "d" * 32,
        "title": "t",
        "uri": "u",
        "collection": "kb",
        "status": "pending",
        "chunks": 0,
        "version": "",
        "error": None,
        "updated_at": None,
    }
    assert document_rows([doc], "zh")[0][1] == "待处理"


def test_audit_actions_are_named_in_chinese_and_found_by_either_name() -> None:
    records = [
        {"seq": 1, "ts": "2026-12-02T09:00:00+00:00", "actor": "ada", "action": "auth.login", "target": "ui"},
        {
            "seq": 2,
            "ts": "2026-12-02T09:10:00+00:00",
            "actor": "ada",
            "action": "POST /api/v1/users",
            "target": "t",
        },
        {"seq": 3, "ts": "2026-12-02T09:20:00+00:00", "actor": "ada", "action": "keys.revoke", "target": "3"},
    ]
    now = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert action_text("zh", "auth.login") == "登录（auth.login）"
    assert action_text("en", "auth.login") == "signed in (auth.login)"
    assert action_text("zh", "POST /api/v1/users") == "添加用户（POST /api/v1/users）"
    assert action_text("zh", "POST /api/v1/nothing") == "POST /api/v1/nothing"  # unnamed: as stored
    shown = record_rows(records, "zh")
    assert [r[3] for r in shown] == [
        "登录（auth.login）",
        "添加用户（POST /api/v1/users）",
        "吊销 API 密钥（keys.revoke）",
    ]
    for needle in ("auth.login", "登录", "AUTH"):
        assert [r["seq"] for r in filter_records(records, "", needle, "all", now, lang="zh")] == [1], needle
    assert [r["seq"] for r in filter_records(records, "", "keys", "all", now, lang="zh")] == [3]
    assert [r["seq"] for r in filter_records(records, "", "revoked", "all", now)] == [3]


def test_every_audited_route_has_a_name_in_both_languages() -> None:
    """The middleware records each changing /api/v1 request outside the metered routes as
    ``<METHOD> <route template>``; the console names every such action in English and Chinese."""
    from appliance.api.routers import collections, conversations, evaluation, identity, ingestion, kb, usage
    from appliance.settings import QuotaSettings

    metered = QuotaSettings().metered_routes
    audited = [
        f"{method} {route.path}"
        for module in (collections, conversations, evaluation, identity, ingestion, kb, usage)
        for route in module.router.routes
        for method in getattr(route, "methods", set()) - {"GET", "HEAD", "OPTIONS"}
        if route.path.startswith("/api/v1/") and not any(route.path.startswith(m) for m in metered)
    ]
    assert len(audited) >= 25
    for action in audited:
        for lang in ("en", "zh"):
            assert action_text(lang, action) != action, (lang, action)


def test_audit_outcomes_are_read_from_the_record_and_named_in_chinese() -> None:
    def record(action: str, **data: object) -> dict:
        return {"seq": 1, "ts": "", "actor": "ada", "action": action, "target": "t", "data": data}

    cases = [
        (record("POST /api/v1/sources", status=200), "ok", "成功"),
        (record("DELETE /api/v1/keys/{key_id}", status=403), "refused", "已拒绝"),
        (record("auth.denied", reason="bad password"), "refused", "已拒绝"),
        (record("POST /api/v1/sources", status=422), "failed", "失败"),
        (record("ask", status="error"), "failed", "失败"),
        (record("ask", status="ok"), "ok", "成功"),
        (record("ingest", cancelled=True), "cancelled", "已取消"),
        (record("audit.checkpoint", count=3), "", ""),
    ]
    for rec, stored, chinese in cases:
        assert outcome(rec) == stored, rec
        row = record_rows([rec], "zh")[0]
        assert row[HEADERS.index("c_h_outcome")] == chinese, rec
        assert record_rows([rec])[0][HEADERS.index("c_h_outcome")] == stored
    assert len(record_rows([cases[0][0]])[0]) == len(HEADERS)
