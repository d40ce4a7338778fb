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
from ui.i18n import SET_LANG_JS, language_switch, t, term

ADMIN_CSS = (Path(__file__).resolve().parent / "admin.css").read_text(encoding="utf-8")


TABS = {
    "sources": "c_tab_sources",
    "documents": "c_tab_documents",
    "retrieval": "c_tab_retrieval",
    "collections": "c_tab_collections",
    "identity": "c_tab_identity",
    "audit": "c_tab_audit",
    "usage": "c_tab_usage",
    "pool": "c_tab_pool",
    "quality": "c_tab_quality",
}


def _header(principal: Any, lang: str = "en") -> str:
    who = (
        f"{esc(principal.name)} ({esc(term(lang, 'c_role_', principal.role))})"
        if principal is not None
        else ""
    )
    return (
        f'<div class="kb-header" id="kb-admin-header"><h1>{esc(t(lang, "c_title"))}</h1>'
        f'<div class="kb-who"><span class="kb-user">{who}</span> · <a href="/">{esc(t(lang, "chat"))}</a> · '
        f'<a href="/admin/logout">{esc(t(lang, "sign_out"))}</a></div></div>'
    )


def build_admin(container: Any, sessions: Any) -> gr.Blocks:
    """The console at ``/admin``. ``sessions.get(request.username)`` is a live session's principal."""
    console = Console(container, sessions)
    tr = console.labels
    with gr.Blocks(title="Knowledge base console", analytics_enabled=False) as blocks:
        with gr.Row(elem_id="kb-top", equal_height=True):
            header = gr.HTML(_header(None))
            language = language_switch()
        refused = gr.HTML(visible=False, elem_id="kb-admin-refusal")
        tab: dict[str, Any] = {}
        with gr.Column(visible=False, elem_id="kb-admin") as main, gr.Tabs() as tabs:
            with gr.Tab("Sources", id="sources", elem_id="kb-tab-sources") as tab["sources"]:
                sources = build_sources(console)
            with gr.Tab("Documents", id="documents", elem_id="kb-tab-documents") as tab["documents"]:
                documents = build_documents(console)
            with gr.Tab("Retrieval testing", id="retrieval", elem_id="kb-tab-retrieval") as tab["retrieval"]:
                retrieval = build_retrieval(console)
            with gr.Tab("Collections", id="collections", elem_id="kb-tab-collections") as tab["collections"]:
                collections = build_collections(console)
            with gr.Tab("Users and keys", id="identity", elem_id="kb-tab-identity") as tab["identity"]:
                identity = build_identity(console)
            with gr.Tab("Audit", id="audit", elem_id="kb-tab-audit") as tab["audit"]:
                audit = build_audit(console)
            with gr.Tab("Usage", id="usage", elem_id="kb-tab-usage") as tab["usage"]:
                usage = build_usage(console)
            with gr.Tab("Inference pool", id="pool", elem_id="kb-tab-pool") as tab["pool"]:
                pool = build_pool(console)
            with gr.Tab("Quality", id="quality", elem_id="kb-tab-quality") as tab["quality"]:
                quality = build_quality(console, {**retrieval, "tabs": tabs})
        pages = [sources, documents, retrieval, collections]
        admin_pages = [identity, audit, usage, pool, quality]
        admin_ids = ["identity", "audit", "usage", "pool", "quality"]
        tab_list = [tab[k] for k in TABS]
        # The labelled components first (the tabs among them), then the pages' data.
        labelled = [header, language, *tab_list, *tr.components]
        outputs = [*labelled, refused, main]
        for page in pages + admin_pages:
            outputs.extend(page["outputs"])

        def relabel(lang: str, principal: Any) -> list[Any]:
            admin = principal is not None and principal.is_admin
            tab_updates = [
                gr.update(label=t(lang, key), visible=admin)
                if k in admin_ids
                else gr.update(label=t(lang, key))
                for k, key in TABS.items()
            ]
            return [
                _header(principal, lang),
                gr.update(label=t(lang, "language"), value=lang),
                *tab_updates,
                *tr.updates(lang),
            ]

        async def on_load(request: gr.Request) -> list[Any]:
            principal = console.who(request)
            lang = console.lang(request)
            if principal is None or not is_curator(principal):
                hidden = [gr.update()] * (len(outputs) - len(labelled) - 2)
                return [
                    *relabel(lang, None if principal is None else principal)[:2],
                    *[gr.update(visible=False) for _ in tab_list],
                    *[gr.update()] * len(tr.components),
                    gr.update(value=refusal_html(principal, lang), visible=True),
                    gr.update(visible=False),
                    *hidden,
                ]
            updates: list[Any] = [
                *relabel(lang, principal),
                gr.update(visible=False),
                gr.update(visible=True),
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

        async def on_language(lang: str, request: gr.Request) -> list[Any]:
            # The cookie is set in the browser before this runs (SET_LANG_JS), so the pages'
            # refresh below already reads the new language.
            principal = console.who(request)
            if principal is None or not is_curator(principal):
                return [
                    *relabel(lang, principal)[:2],
                    *[gr.update()] * (len(labelled) - 2),
                    gr.update(value=refusal_html(principal, lang)),
                    *[gr.update()] * (len(outputs) - len(labelled) - 1),
                ]
            return await on_load(request)

        language.input(on_language, language, outputs, js=SET_LANG_JS)
    return blocks
