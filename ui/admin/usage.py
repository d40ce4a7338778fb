"""Usage (admins): tokens and requests per user or group as plots over a chosen window, and the
quotas, editable. The calls of ``appliance/api/routers/usage.py`` (``Metering.report``,
``set_quota``, ``delete_quota``), audited like them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr
import pandas as pd

from ui.admin.common import Console, failed, notice, table
from ui.i18n import t

WINDOWS = {"today": 0, "last 7 days": 6, "last 30 days": 29}
WINDOW_KEYS = {"today": "c_w_today", "last 7 days": "c_w_7d", "last 30 days": "c_w_30d"}
QUOTA_HEADERS = ["c_h_subject", "c_h_tokens_day", "c_h_requests_minute"]


def usage_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Totals per subject over the rows' days, largest first."""
    totals: dict[str, dict[str, Any]] = {}
    for r in rows:
        t = totals.setdefault(r["subject"], {"subject": r["subject"], "tokens": 0, "requests": 0})
        t["tokens"] += int(r["total_tokens"])
        t["requests"] += int(r["requests"])
    ordered = sorted(totals.values(), key=lambda t: (-t["tokens"], t["subject"]))
    return pd.DataFrame(ordered, columns=["subject", "tokens", "requests"])


def _number(value: float | None) -> int | None:
    """0 or empty: no limit of that kind (a quota of 0 would lock the subject out)."""
    return int(value) if value else None


def build_usage(console: Console) -> dict[str, Any]:
    metering = console.container.metering
    tr = console.labels
    with gr.Row():
        kind = tr(
            gr.Radio(["user", "group"], value="user", label="Per"),
            label="c_per",
            choices=[("c_per_user", "user"), ("c_per_group", "group")],
        )
        window = tr(
            gr.Dropdown(list(WINDOWS), value="last 7 days", label="Window"),
            label="c_window",
            choices=[(key, w) for w, key in WINDOW_KEYS.items()],
        )
        show = tr(gr.Button("Show", elem_id="kb-usage-show"), value="c_show")
    with gr.Row():
        tokens = tr(
            gr.BarPlot(x="subject", y="tokens", title="Tokens", elem_id="kb-usage-tokens"), title="c_tokens"
        )
        requests = tr(
            gr.BarPlot(x="subject", y="requests", title="Requests", elem_id="kb-usage-requests"),
            title="c_requests",
        )
    tr(gr.Markdown("### Quotas (empty: the defaults apply)"), value="c_quotas_heading")
    quotas = gr.Dataframe(headers=QUOTA_HEADERS, value=[], interactive=False, elem_id="kb-quotas-table")
    with gr.Row():
        subject = tr(gr.Textbox(label="Subject", elem_id="kb-quota-subject"), label="c_subject")
        per_day = tr(
            gr.Number(value=None, precision=0, minimum=0, label="Tokens per day (0: no limit)"),
            label="c_tokens_day",
        )
        per_minute = tr(
            gr.Number(value=None, precision=0, minimum=0, label="Requests per minute (0: no limit)"),
            label="c_requests_minute",
        )
        save = tr(gr.Button("Set quota", variant="primary", elem_id="kb-quota-set"), value="c_set_quota")
        remove = tr(gr.Button("Remove quota", variant="stop"), value="c_remove_quota")
    status = gr.HTML(elem_id="kb-usage-status")

    def plots(k: str, w: str) -> list[Any]:
        since = (datetime.now(UTC) - timedelta(days=WINDOWS.get(w, 6))).date().isoformat()
        frame = usage_frame(metering.report(since, None, None, k))
        return [frame, frame]

    def quota_rows(lang: str) -> dict[str, Any]:
        rows = [[q["subject"], q["tokens_per_day"], q["requests_per_minute"]] for q in metering.list_quotas()]
        return table(lang, QUOTA_HEADERS, rows)

    async def refresh(request: gr.Request) -> list[Any]:
        if not console.curator(request).is_admin:
            return [gr.update()] * 3
        lang = console.lang(request)
        return [
            *await asyncio.to_thread(plots, "user", "last 7 days"),
            await asyncio.to_thread(quota_rows, lang),
        ]

    async def on_show(k: str, w: str, request: gr.Request) -> list[Any]:
        lang = console.lang(request)
        try:
            got = await asyncio.to_thread(
                console.act, request, "GET /api/v1/usage", "/api/v1/usage", lambda p: plots(k, w), True, False
            )
        except Exception as exc:
            return [gr.update(), gr.update(), failed(exc, lang)]
        per = t(lang, "c_per_user" if k == "user" else "c_per_group")
        return [*got, notice(t(lang, "c_usage_shown", per=per, window=t(lang, WINDOW_KEYS.get(w, "c_w_7d"))))]

    async def quota_change(request: gr.Request, action: str, target: str, call: Any, done: str) -> list[Any]:
        lang = console.lang(request)
        try:
            await asyncio.to_thread(console.act, request, action, target, call, True)
            return [await asyncio.to_thread(quota_rows, lang), notice(done)]
        except Exception as exc:
            return [gr.update(), failed(exc, lang)]

    async def on_save(s: str, day: float | None, minute: float | None, request: gr.Request) -> list[Any]:
        s = (s or "").strip()
        return await quota_change(
            request,
            "PUT /api/v1/quotas",
            "/api/v1/quotas",
            lambda p: metering.set_quota(s, _number(day), _number(minute)),
            console.t(request, "c_quota_set", subject=s),
        )

    async def on_remove(s: str, request: gr.Request) -> list[Any]:
        s = (s or "").strip()
        return await quota_change(
            request,
            "DELETE /api/v1/quotas/{subject}",
            f"/api/v1/quotas/{s}",
            lambda p: metering.delete_quota(s),
            console.t(request, "c_quota_removed", subject=s),
        )

    show.click(on_show, [kind, window], [tokens, requests, status])
    save.click(on_save, [subject, per_day, per_minute], [quotas, status])
    remove.click(on_remove, subject, [quotas, status])
    return {"refresh": refresh, "outputs": [tokens, requests, quotas]}
