"""The console's Blocks: a header, the pages as tabs, and the refusal shown to everyone else.

Who may see what is decided on every event by the services, not by the page: the page load only
chooses what to draw (the refusal for employees, the admin-only tabs for admins). Nothing of a
user is kept on a shared object; a page's selection lives in its components.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from appliance.security.acl import is_curator
from ui.admin.audit import build_audit
from ui.admin.collections import build_collections
from ui.admin.common import Console, esc, refusal_html
from ui.admin.documents import build_documents
from ui.admin.identity import build_identity
from ui.admin.pool import build_pool
from ui.admin.quality import build_quality
from ui.admin.retrieval import build_retrieval
from ui.admin.sources import build_sources
from ui.admin.usage import build_usage

ADMIN_CSS = (Path(__file__).resolve().parent / "admin.css").read_text(encoding="utf-8")


def _header(principal: Any) -> str:
    who = f"{esc(principal.name)} ({esc(principal.role)})" if principal is not None else ""
    return (
        '<div class="kb-header" id="kb-admin-header"><h1>Knowledge base · console</h1>'
        f'<div class="kb-who"><span class="kb-user">{who}</span> · <a href="/">Chat</a> · '
        '<a href="/admin/logout">Sign out</a></div></div>'
    )


def build_admin(container: Any, sessions: Any) -> gr.Blocks:
    """The console at ``/admin``. ``sessions.get(request.username)`` is a live session's principal."""
    console = Console(container, sessions)
    with gr.Blocks(title="Knowledge base console", analytics_enabled=False) as blocks:
        header = gr.HTML(_header(None))
        refused = gr.HTML(visible=False, elem_id="kb-admin-refusal")
        with gr.Column(visible=False, elem_id="kb-admin") as main, gr.Tabs() as tabs:
            with gr.Tab("Sources", id="sources", elem_id="kb-tab-sources"):
                sources = build_sources(console)
            with gr.Tab("Documents", id="documents", elem_id="kb-tab-documents"):
                documents = build_documents(console)
            with gr.Tab("Retrieval testing", id="retrieval", elem_id="kb-tab-retrieval"):
                retrieval = build_retrieval(console)
            with gr.Tab("Collections", id="collections", elem_id="kb-tab-collections"):
                collections = build_collections(console)
            with gr.Tab("Users and keys", id="identity", elem_id="kb-tab-identity") as identity_tab:
                identity = build_identity(console)
            with gr.Tab("Audit", id="audit", elem_id="kb-tab-audit") as audit_tab:
                audit = build_audit(console)
            with gr.Tab("Usage", id="usage", elem_id="kb-tab-usage") as usage_tab:
                usage = build_usage(console)
            with gr.Tab("Inference pool", id="pool", elem_id="kb-tab-pool") as pool_tab:
                pool = build_pool(console)
            with gr.Tab("Quality", id="quality", elem_id="kb-tab-quality") as quality_tab:
                quality = build_quality(console, {**retrieval, "tabs": tabs})
        pages = [sources, documents, retrieval, collections]
        admin_pages = [identity, audit, usage, pool, quality]
        admin_tabs = [identity_tab, audit_tab, usage_tab, pool_tab, quality_tab]
        outputs = [header, refused, main, *admin_tabs]
        for page in pages + admin_pages:
            outputs.extend(page["outputs"])

        async def on_load(request: gr.Request) -> list[Any]:
            principal = console.who(request)
            if principal is None or not is_curator(principal):
                hidden = [gr.update()] * (len(outputs) - 3 - len(admin_tabs))
                return [
                    _header(principal),
                    gr.update(
                        value=refusal_html(principal, request.headers.get("accept-language")), visible=True
                    ),
                    gr.update(visible=False),
                    *[gr.update(visible=False) for _ in admin_tabs],
                    *hidden,
                ]
            updates: list[Any] = [
                _header(principal),
                gr.update(visible=False),
                gr.update(visible=True),
                *[gr.update(visible=principal.is_admin) for _ in admin_tabs],
            ]
            for page in pages:
                updates.extend(await page["refresh"](request))
            for page in admin_pages:
                if principal.is_admin:
                    updates.extend(await page["refresh"](request))
                else:
                    updates.extend([gr.update()] * len(page["outputs"]))
            return updates

        blocks.load(on_load, None, outputs)
    return blocks
