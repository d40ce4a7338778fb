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
from ui.admin.common import Console, collection_names, esc, failed, notice, split_list

PAGE_SIZE = 20
ALL = "(all)"
STATUSES = [ALL, "indexed", "failed", "pending"]
DOC_HEADERS = ["id", "title", "collection", "status", "chunks", "version", "error", "updated"]
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


def document_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            d["id"],
            d["title"] or d["uri"],
            d["collection"],
            d["status"],
            d["chunks"],
            (d["version"] or "")[:24],
            d["error"] or "",
            (d["updated_at"] or "")[:19],
        ]
        for d in items
    ]


def chunks_html(preview: Any) -> str:
    parts = "".join(
        f'<div class="kb-chunk"><div class="kb-chunk-meta">#{i + 1} · {esc(p.chunk_id)}'
        f"{' · page ' + esc(p.page) if p.page else ''}{' · ' + esc(p.section) if p.section else ''}</div>"
        f"{esc(p.text)}</div>"
        for i, p in enumerate(preview.parts)
    )
    head = f"<h4>{esc(preview.title)} <small>version {esc(preview.version)}</small></h4>"
    return f'<div class="kb-chunks">{head}{parts or "<p>No chunks.</p>"}</div>'


def build_documents(console: Console) -> dict[str, Any]:
    jobs = console.container.jobs
    with gr.Row():
        coll = gr.Dropdown([ALL], value=ALL, label="Collection", elem_id="kb-docs-collection")
        words = gr.Textbox(label="Search title, path or error", elem_id="kb-docs-search")
        status_f = gr.Dropdown(STATUSES, value=ALL, label="Status", elem_id="kb-docs-status")
        page = gr.Number(value=1, precision=0, minimum=1, label="Page", elem_id="kb-docs-page")
        refresh_btn = gr.Button("Refresh", elem_id="kb-docs-refresh")
    info = gr.Markdown(elem_id="kb-docs-info")
    table = gr.Dataframe(
        headers=DOC_HEADERS,
        value=[],
        interactive=False,
        wrap=True,
        elem_id="kb-docs-table",
        label="Documents",
    )
    with gr.Row():
        selected = gr.Textbox(label="Selected document", interactive=False, elem_id="kb-doc-id")
        chunks_btn = gr.Button("Open chunks", elem_id="kb-doc-chunks")
        reindex_btn = gr.Button("Reindex / retry", elem_id="kb-doc-reindex")
        retry_all_btn = gr.Button("Retry all failed", elem_id="kb-docs-retry-all")
        delete_btn = gr.Button("Delete", variant="stop", elem_id="kb-doc-delete")
    status = gr.HTML(elem_id="kb-docs-status-line")
    with gr.Accordion("Upload a document", open=False), gr.Row():
        upload = gr.File(label="File", file_count="single", type="filepath", elem_id="kb-doc-upload")
        up_coll = gr.Dropdown([], label="Collection", elem_id="kb-doc-upload-collection")
        up_allow = gr.Textbox(label="Readers (group:NAME, user:NAME; empty: the collection's default)")
        upload_btn = gr.Button("Upload", variant="primary", elem_id="kb-doc-upload-btn")
    chunks = gr.HTML(elem_id="kb-doc-chunks-view")

    async def listing(request: gr.Request, c: str, w: str, s: str, p: float | None) -> list[Any]:
        principal = console.curator(request)
        found = await asyncio.to_thread(find_documents, console, principal, c, w, s)
        pages = max(1, math.ceil(len(found) / PAGE_SIZE))
        n = min(max(int(p or 1), 1), pages)
        rows = document_rows(found[(n - 1) * PAGE_SIZE : n * PAGE_SIZE])
        return [rows, f"{len(found)} documents · page {n} of {pages}", n]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        names = await asyncio.to_thread(collection_names, console, principal)
        got = await listing(request, ALL, "", ALL, 1)
        first = names[0] if names else None
        return [*got, gr.update(choices=[ALL, *names], value=ALL), gr.update(choices=names, value=first)]

    async def on_filter(c: str, w: str, s: str, p: float | None, request: gr.Request) -> list[Any]:
        try:
            return await listing(request, c, w, s, p)
        except Exception as exc:
            return [gr.update(), failed(exc), gr.update()]

    async def on_select(evt: gr.SelectData) -> str:
        return str(evt.row_value[0]) if evt.row_value else ""

    async def on_reindex(doc_id: str, request: gr.Request) -> str:
        if not doc_id:
            return notice("Select a document first.", "error")
        return await console.attempt(
            request,
            "POST /api/v1/documents/{doc_id}/reindex",
            f"/api/v1/documents/{doc_id}/reindex",
            lambda p: jobs.reindex(p, doc_id),
            lambda job: f"Reindexing {doc_id} (job {job.id}).",
        )

    async def on_retry_all(c: str, w: str, request: gr.Request) -> str:
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
            return failed(exc)
        return notice(f"Retrying {len(started)} failed documents." if started else "No failed documents.")

    async def on_delete(doc_id: str, request: gr.Request) -> str:
        if not doc_id:
            return notice("Select a document first.", "error")
        return await console.attempt(
            request,
            "DELETE /api/v1/documents/{doc_id}",
            f"/api/v1/documents/{doc_id}",
            lambda p: jobs.delete_document(p, doc_id),
            lambda _: f"Document {doc_id} removed from the index.",
        )

    async def on_chunks(doc_id: str, request: gr.Request) -> str:
        if not doc_id:
            return notice("Select a document first.", "error")
        try:
            principal = console.curator(request)
            preview = await asyncio.to_thread(console.container.originals.preview, principal, doc_id)
        except Exception as exc:
            return failed(exc)
        return chunks_html(preview)

    async def on_upload(path: str | None, c: str | None, a: str, request: gr.Request) -> str:
        if not path:
            return notice("Choose a file first.", "error")
        name = Path(path).name

        def put(principal: Principal) -> Any:
            with open(path, "rb") as stream:
                return jobs.upload(principal, stream, name, c or None, split_list(a))

        return await console.attempt(
            request,
            "POST /api/v1/documents",
            "/api/v1/documents",
            put,
            lambda got: f"Uploaded {name} as {got[0]}; indexing (job {got[1].id}).",
            filename=name,
        )

    filters = [coll, words, status_f, page]
    for trigger in (refresh_btn.click, coll.input, status_f.input, words.submit, page.submit):
        trigger(on_filter, filters, [table, info, page])
    table.select(on_select, None, selected)
    reindex_btn.click(on_reindex, selected, status)
    retry_all_btn.click(on_retry_all, [coll, words], status)
    delete_btn.click(on_delete, selected, status).then(on_filter, filters, [table, info, page])
    chunks_btn.click(on_chunks, selected, chunks)
    upload_btn.click(on_upload, [upload, up_coll, up_allow], status)
    return {"refresh": refresh, "outputs": [table, info, page, coll, up_coll]}
