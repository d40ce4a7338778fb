"""The audit viewer (admins): the live log filtered by user, action and time, newest first, and a
Verify button that runs the chain check (``appliance audit verify``, ``GET /api/v1/audit/verify``).

Records are read from the log's own export (the same text ``appliance audit export`` writes), so
the viewer shows exactly what a verifier checks. Every value renders as text in a Dataframe.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr

from ui.admin.common import Console, failed, notice, table
from ui.i18n import t, term

HEADERS = ["c_h_seq", "c_h_time", "c_h_actor", "c_h_action", "c_h_outcome", "c_h_target", "c_h_data"]
SHOWN = 200
WINDOWS = {"last hour": 1, "last day": 24, "last week": 24 * 7, "all": None}
WINDOW_KEYS = {"last hour": "c_w_hour", "last day": "c_w_day", "last week": "c_w_week", "all": "c_w_all"}


def audit_records(export: str) -> list[dict[str, Any]]:
    """The records of an export, without its trailer (the line that pins length and head)."""
    out = []
    for line in export.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "seq" in record and "action" in record:
            out.append(record)
    return out


def action_text(lang: str, action: str) -> str:
    """An action as the viewer shows it: its name in ``lang`` with the stored one beside it
    (``登录（auth.login）``), or the stored one alone (a REST route: ``POST /api/v1/sources``)."""
    name = term(lang, "c_ev_", action)
    return action if name == action else t(lang, "c_ev_shown", name=name, action=action)


def outcome(record: dict[str, Any]) -> str:
    """How an action ended, from what its record holds: ``ok``, ``refused`` (401/403, or a refusal
    record), ``failed`` (another HTTP error, or an answer that failed), ``cancelled``; empty when
    the record does not say (a checkpoint, a CLI action)."""
    data = record.get("data")
    if not isinstance(data, dict):
        data = {}
    status = data.get("status")
    if record.get("action") == "auth.denied" or status in (401, 403):
        return "refused"
    if data.get("cancelled"):
        return "cancelled"
    if isinstance(status, int) and not isinstance(status, bool):
        return "ok" if status < 400 else "failed"
    if status == "error":
        return "failed"
    return str(status or "")


def filter_records(
    records: list[dict[str, Any]],
    user: str,
    action: str,
    window: str,
    now: datetime | None = None,
    lang: str = "en",
) -> list[dict[str, Any]]:
    """Newest first; ``action`` matches the stored action or its shown name (``action_text``)."""
    hours = WINDOWS.get(window)
    since = (now or datetime.now(UTC)) - timedelta(hours=hours) if hours else None
    user, action = (user or "").strip().lower(), (action or "").strip().lower()
    kept = []
    for r in reversed(records):
        if user and user != str(r.get("actor", "")).lower():
            continue
        if action and action not in action_text(lang, str(r.get("action", ""))).lower():
            continue
        if since is not None:
            try:
                if datetime.fromisoformat(str(r["ts"])) < since:
                    continue
            except (KeyError, ValueError):
                continue
        kept.append(r)
    return kept


def record_rows(records: list[dict[str, Any]], lang: str = "en") -> list[list[Any]]:
    return [
        [
            r["seq"],
            str(r.get("ts", ""))[:19],
            r.get("actor", ""),
            action_text(lang, str(r.get("action", ""))),
            term(lang, "c_out_", outcome(r)),
            r.get("target", ""),
            json.dumps(r.get("data"), ensure_ascii=False, sort_keys=True)[:400],
        ]
        for r in records[:SHOWN]
    ]


def build_audit(console: Console) -> dict[str, Any]:
    log = console.container.audit
    tr = console.labels
    with gr.Row():
        user = tr(gr.Textbox(label="User", elem_id="kb-audit-user"), label="c_h_user")
        action = tr(gr.Textbox(label="Action contains", elem_id="kb-audit-action"), label="c_action_contains")
        window = tr(
            gr.Dropdown(list(WINDOWS), value="last day", label="Time"),
            label="c_h_time",
            choices=[(key, w) for w, key in WINDOW_KEYS.items()],
        )
        show = tr(gr.Button("Show", elem_id="kb-audit-show"), value="c_show")
        verify = tr(
            gr.Button("Verify the chain", variant="primary", elem_id="kb-audit-verify"), value="c_verify"
        )
    status = gr.HTML(elem_id="kb-audit-status")
    records = gr.Dataframe(
        headers=HEADERS, value=[], interactive=False, wrap=True, max_chars=200, elem_id="kb-audit-table"
    )

    def rows(u: str, a: str, w: str, lang: str) -> tuple[list[list[Any]], int]:
        found = filter_records(audit_records(log.export()), u, a, w, lang=lang)
        return record_rows(found, lang), len(found)

    async def on_show(u: str, a: str, w: str, request: gr.Request) -> list[Any]:
        lang = console.lang(request)
        try:
            shown, total = await asyncio.to_thread(
                console.act,
                request,
                "GET /api/v1/audit",
                "/audit",
                lambda p: rows(u, a, w, lang),
                True,
                False,
            )
        except Exception as exc:
            return [gr.update(), failed(exc, lang)]
        return [
            table(lang, HEADERS, shown),
            notice(t(lang, "c_audit_found", n=total, shown=min(total, SHOWN))),
        ]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        if not principal.is_admin:
            return [gr.update()]
        lang = console.lang(request)
        shown, _ = await asyncio.to_thread(rows, "", "", "last day", lang)
        return [table(lang, HEADERS, shown)]

    async def on_verify(request: gr.Request) -> str:
        lang = console.lang(request)
        try:
            result = await asyncio.to_thread(
                console.act,
                request,
                "GET /api/v1/audit/verify",
                "/api/v1/audit/verify",
                lambda p: log.verify(),
                True,
                False,
            )
        except Exception as exc:
            return failed(exc, lang)
        if result.ok:
            return notice(t(lang, "c_chain_ok", n=result.records))
        return notice(t(lang, "c_chain_bad", line=result.first_bad, reason=result.reason), "error")

    show.click(on_show, [user, action, window], [records, status])
    verify.click(on_verify, None, status)
    return {"refresh": refresh, "outputs": [records]}
