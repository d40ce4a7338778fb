"""Documents: a paged, searchable table; upload; delete; reindex; retry one or all failed; chunks.

The list is the documents service's (``IngestionJobs.documents``: only what the caller may read),
narrowed to the collections the caller curates, then to the search words and status; the page is
cut on the server and only it is sent (the Dataframe has no paging of its own). Writes are the
service methods of the REST routes, audited like them. Chunk text renders escaped.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import gradio as gr

from appliance.domain import Principal
from appliance.ingestion.originals import version_label
from ui.admin.common import Console, collection_names, esc, failed, notice, split_list, table
from ui.i18n import t, term, term_choices

PAGE_SIZE = 20
ALL = "(all)"
STATUSES = [ALL, "indexed", "failed", "pending"]
# The title gets the room; the error is cut to ERROR_CHARS (a click on it shows it whole) and the
# id, needed to act on a row, comes last.
DOC_HEADERS = [
    "c_h_title",
    "c_h_status",
    "c_h_chunks",
    "c_h_version",
    "c_h_updated",
    "c_h_collection",
    "c_h_error",
    "c_h_id",
]
DOC_WIDTHS: list[str | int] = ["27%", "9%", "7%", "15%", "14%", "10%", "11%", "7%"]
CELL_CHARS = 60
SHORT_ID = 8  # the id column shows this much; the page keeps the whole ids (``short_ids``)
EVERY_DOCUMENT = 1_000_000  # the service pages too; one read of the ledger answers every filter


def find_documents(
    console: Console, principal: Principal, collection: str | None, words: str, status: str
) -> list[dict[str, Any]]:
    """The documents the principal manages that match the filters, in ledger order."""
    name = None if collection in (None, "", ALL) else collection
    items, _ = console.container.jobs.documents(principal, name, EVERY_DOCUMENT, 0)
    curated = console.container.collections.curated(principal)
    needles = [w.lower() for w in (words or "").split()]
    out = []
    for d in items:
        if d["collection"] not in curated or (status not in ("", ALL, None) and d["status"] != status):
            continue
        hay = " ".join(str(d.get(k) or "") for k in ("title", "uri", "id", "error")).lower()
        if all(n in hay for n in needles):
            out.append(d)
    return out


def document_rows(items: list[dict[str, Any]], lang: str = "en") -> list[list[Any]]:
    return [
        [
            d["title"] or d["uri"],
            term(lang, "c_st_", d["status"]),
            d["chunks"],
            version_label(d["version"] or ""),
            (d["updated_at"] or "")[:16].replace("T", " "),
            d["collection"],
            d["error"] or "",
            d["id"][:SHORT_ID],
        ]
        for d in items
    ]


def short_ids(items: list[dict[str, Any]]) -> dict[str, str]:
    """The whole id of each row of a page, by the short one the table shows."""
    return {d["id"][:SHORT_ID]: d["id"] for d in items}


def status_choices() -> list[tuple[str, str]]:
    return [("c_all", ALL), *term_choices("c_st_", STATUSES[1:])]


def chunks_html(preview: Any, lang: str = "en") -> str:
    parts = "".join(
        f'<div class="kb-chunk"><div class="kb-chunk-meta">#{i + 1} · {esc(p.chunk_id)}'
        f"{' · ' + esc(t(lang, 'page', page=p.page)) if p.page else ''}"
        f"{' · ' + esc(p.section) if p.section else ''}</div>"
        f"{esc(p.text)}</div>"
        for i, p in enumerate(preview.parts)
    )
    head = f"<h4>{esc(preview.title)} <small>{esc(t(lang, 'version'))} {esc(preview.version)}</small></h4>"
    none = f"<p>{esc(t(lang, 'c_no_chunks'))}</p>"
    return f'<div class="kb-chunks">{head}{parts or none}</div>'


def build_documents(console: Console) -> dict[str, Any]:
    jobs = console.container.jobs
    tr = console.labels
    with gr.Row():
        coll = tr(
            gr.Dropdown([ALL], value=ALL, label="Collection", elem_id="kb-docs-collection"),
            label="collection",
        )
        words = tr(
            gr.Textbox(label="Search title, path or error", elem_id="kb-docs-search"), label="c_docs_search"
        )
        status_f = tr(
            gr.Dropdown(STATUSES, value=ALL, label="Status", elem_id="kb-docs-status"),
            label="c_status",
            choices=status_choices(),
        )
        page = tr(
            gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="kb-docs-page"), label="c_page"
        )
        refresh_btn = tr(gr.Button("Refresh", elem_id="kb-docs-refresh"), value="c_refresh")
    info = gr.Markdown(elem_id="kb-docs-info")
    docs_table = tr(
        gr.Dataframe(
            headers=DOC_HEADERS,
            value=[],
            interactive=False,
            wrap=True,
            column_widths=DOC_WIDTHS,
            max_chars=CELL_CHARS,
            elem_id="kb-docs-table",
            label="Documents",
        ),
        label="c_tab_documents",
    )
    with gr.Row():
        selected = tr(
            gr.Textbox(label="Selected document", interactive=False, elem_id="kb-doc-id"),
            label="c_selected_doc",
        )
        chunks_btn = tr(gr.Button("Open chunks", elem_id="kb-doc-chunks"), value="c_open_chunks")
        reindex_btn = tr(gr.Button("Reindex / retry", elem_id="kb-doc-reindex"), value="c_reindex")
        retry_all_btn = tr(gr.Button("Retry all failed", elem_id="kb-docs-retry-all"), value="c_retry_all")
        delete_btn = tr(gr.Button("Delete", variant="stop", elem_id="kb-doc-delete"), value="delete")
    status = gr.HTML(elem_id="kb-docs-status-line")
    with tr(gr.Accordion("Upload a document", open=False), label="c_upload_heading"), gr.Row():
        upload = tr(
            gr.File(label="File", file_count="single", type="filepath", elem_id="kb-doc-upload"),
            label="c_file",
        )
        up_coll = tr(
            gr.Dropdown([], label="Collection", elem_id="kb-doc-upload-collection"), label="collection"
        )
        up_allow = tr(gr.Textbox(label="Readers"), label="c_readers")
        upload_btn = tr(gr.Button("Upload", variant="primary", elem_id="kb-doc-upload-btn"), value="c_upload")
    chunks = gr.HTML(elem_id="kb-doc-chunks-view")
    ids = gr.State({})

    async def listing(request: gr.Request, c: str, w: str, s: str, p: float | None) -> list[Any]:
        principal = console.curator(request)
        lang = console.lang(request)
        found = await asyncio.to_thread(find_documents, console, principal, c, w, s)
        pages = max(1, math.ceil(len(found) / PAGE_SIZE))
        n = min(max(int(p or 1), 1), pages)
        shown = found[(n - 1) * PAGE_SIZE : n * PAGE_SIZE]
        rows = document_rows(shown, lang)
        if found:
            text = t(lang, "c_docs_info", n=len(found), page=n, pages=pages)
        elif (w or "").strip() or s not in ("", ALL, None) or c not in ("", ALL, None):
            text = t(lang, "c_docs_no_match")
        else:
            text = t(lang, "c_docs_empty")
        return [table(lang, DOC_HEADERS, rows), text, n, short_ids(shown)]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        names = await asyncio.to_thread(collection_names, console, principal)
        got = await listing(request, ALL, "", ALL, 1)
        first = names[0] if names else None
        every = [(t(console.lang(request), "c_all"), ALL), *[(n, n) for n in names]]
        return [*got, gr.update(choices=every, value=ALL), gr.update(choices=names, value=first)]

    async def on_filter(c: str, w: str, s: str, p: float | None, request: gr.Request) -> list[Any]:
        try:
            return await listing(request, c, w, s, p)
        except Exception as exc:
            return [gr.update(), failed(exc, console.lang(request)), gr.update(), gr.update()]

    async def on_select(page_ids: dict[str, str], evt: gr.SelectData) -> str:
        short = str(evt.row_value[-1]) if evt.row_value else ""
        return page_ids.get(short, short)

    async def on_reindex(doc_id: str, request: gr.Request) -> str:
        lang = console.lang(request)
        if not doc_id:
            return notice(t(lang, "c_select_doc"), "error")
        return await console.attempt(
            request,
            "POST /api/v1/documents/{doc_id}/reindex",
            f"/api/v1/documents/{doc_id}/reindex",
            lambda p: jobs.reindex(p, doc_id),
            lambda job: t(lang, "c_reindexing", id=doc_id, job=job.id),
        )

    async def on_retry_all(c: str, w: str, request: gr.Request) -> str:
        lang = console.lang(request)
        try:
            principal = console.curator(request)
            bad = await asyncio.to_thread(find_documents, console, principal, c, w, "failed")
            started = []
            for d in bad:
                job = await asyncio.to_thread(
                    console.act,
                    request,
                    "POST /api/v1/documents/{doc_id}/reindex",
                    f"/api/v1/documents/{d['id']}/reindex",
                    lambda p, doc=d["id"]: jobs.reindex(p, doc),
                )
                started.append(job.id)
        except Exception as exc:
            return failed(exc, lang)
        return notice(t(lang, "c_retrying", n=len(started)) if started else t(lang, "c_no_failed"))

    async def on_delete(doc_id: str, request: gr.Request) -> str:
        lang = console.lang(request)
        if not doc_id:
            return notice(t(lang, "c_select_doc"), "error")
        return await console.attempt(
            request,
            "DELETE /api/v1/documents/{doc_id}",
            f"/api/v1/documents/{doc_id}",
            lambda p: jobs.delete_document(p, doc_id),
            lambda _: t(lang, "c_doc_deleted", id=doc_id),
        )

    async def on_chunks(doc_id: str, request: gr.Request) -> str:
        lang = console.lang(request)
        if not doc_id:
            return notice(t(lang, "c_select_doc"), "error")
        try:
            principal = console.curator(request)
            preview = await asyncio.to_thread(console.container.originals.preview, principal, doc_id)
        except Exception as exc:
            return failed(exc, lang)
        return chunks_html(preview, lang)

    async def on_upload(path: str | None, c: str | None, a: str, request: gr.Request) -> str:
        lang = console.lang(request)
        if not path:
            return notice(t(lang, "c_choose_file"), "error")
        name = Path(path).name

        def put(principal: Principal) -> Any:
            with open(path, "rb") as stream:
                return jobs.upload(principal, stream, name, c or None, split_list(a))

        return await console.attempt(
            request,
            "POST /api/v1/documents",
            "/api/v1/documents",
            put,
            lambda got: t(lang, "c_uploaded", name=name, id=got[0], job=got[1].id),
            filename=name,
        )

    filters = [coll, words, status_f, page]
    for trigger in (refresh_btn.click, coll.input, status_f.input, words.submit, page.submit):
        trigger(on_filter, filters, [docs_table, info, page, ids])
    docs_table.select(on_select, ids, selected)
    reindex_btn.click(on_reindex, selected, status)
    retry_all_btn.click(on_retry_all, [coll, words], status)
    delete_btn.click(on_delete, selected, status).then(on_filter, filters, [docs_table, info, page, ids])
    chunks_btn.click(on_chunks, selected, chunks)
    upload_btn.click(on_upload, [upload, up_coll, up_allow], status)
    return {"refresh": refresh, "outputs": [docs_table, info, page, ids, coll, up_coll]}
