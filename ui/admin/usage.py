"""Usage (admins): tokens and requests per user or group as plots over a chosen window, and the
quotas, editable. The calls of ``appliance/api/routers/usage.py`` (``Metering.report``,
``set_quota``, ``delete_quota``), audited like them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import gradio as gr
import pandas as pd

from ui.admin.common import Console, failed, notice

WINDOWS = {"today": 0, "last 7 days": 6, "last 30 days": 29}
QUOTA_HEADERS = ["subject", "tokens per day", "requests per minute"]


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
    with gr.Row():
        kind = gr.Radio(["user", "group"], value="user", label="Per")
        window = gr.Dropdown(list(WINDOWS), value="last 7 days", label="Window")
        show = gr.Button("Show", elem_id="kb-usage-show")
    with gr.Row():
        tokens = gr.BarPlot(x="subject", y="tokens", title="Tokens", elem_id="kb-usage-tokens")
        requests = gr.BarPlot(x="subject", y="requests", title="Requests", elem_id="kb-usage-requests")
    gr.Markdown("### Quotas (empty: the defaults apply)")
    quotas = gr.Dataframe(headers=QUOTA_HEADERS, value=[], interactive=False, elem_id="kb-quotas-table")
    with gr.Row():
        subject = gr.Textbox(label="Subject (user:NAME or group:NAME)", elem_id="kb-quota-subject")
        per_day = gr.Number(value=None, precision=0, minimum=0, label="Tokens per day (0: no limit)")
        per_minute = gr.Number(value=None, precision=0, minimum=0, label="Requests per minute (0: no limit)")
        save = gr.Button("Set quota", variant="primary", elem_id="kb-quota-set")
        remove = gr.Button("Remove quota", variant="stop")
    status = gr.HTML(elem_id="kb-usage-status")

    def plots(k: str, w: str) -> list[Any]:
        since = (datetime.now(UTC) - timedelta(days=WINDOWS.get(w, 6))).date().isoformat()
        frame = usage_frame(metering.report(since, None, None, k))
        return [frame, frame]

    def quota_rows() -> list[list[Any]]:
        return [[q["subject"], q["tokens_per_day"], q["requests_per_minute"]] for q in metering.list_quotas()]

    async def refresh(request: gr.Request) -> list[Any]:
        if not console.curator(request).is_admin:
            return [gr.update()] * 3
        return [*await asyncio.to_thread(plots, "user", "last 7 days"), await asyncio.to_thread(quota_rows)]

    async def on_show(k: str, w: str, request: gr.Request) -> list[Any]:
        try:
            got = await asyncio.to_thread(
                console.act, request, "GET /api/v1/usage", "/api/v1/usage", lambda p: plots(k, w), True, False
            )
        except Exception as exc:
            return [gr.update(), gr.update(), failed(exc)]
        return [*got, notice(f"Usage per {k}, {w}.")]

    async def quota_change(request: gr.Request, action: str, target: str, call: Any, done: str) -> list[Any]:
        try:
            await asyncio.to_thread(console.act, request, action, target, call, True)
            return [await asyncio.to_thread(quota_rows), notice(done)]
        except Exception as exc:
            return [gr.update(), failed(exc)]

    async def on_save(s: str, day: float | None, minute: float | None, request: gr.Request) -> list[Any]:
        s = (s or "").strip()
        return await quota_change(
            request,
            "PUT /api/v1/quotas",
            "/api/v1/quotas",
            lambda p: metering.set_quota(s, _number(day), _number(minute)),
            f"Quota of {s} set.",
        )

    async def on_remove(s: str, request: gr.Request) -> list[Any]:
        s = (s or "").strip()
        return await quota_change(
            request,
            "DELETE /api/v1/quotas/{subject}",
            f"/api/v1/quotas/{s}",
            lambda p: metering.delete_quota(s),
            f"Quota of {s} removed: the defaults apply.",
        )

    show.click(on_show, [kind, window], [tokens, requests, status])
    save.click(on_save, [subject, per_day, per_minute], [quotas, status])
    remove.click(on_remove, subject, [quotas, status])
    return {"refresh": refresh, "outputs": [tokens, requests, quotas]}
