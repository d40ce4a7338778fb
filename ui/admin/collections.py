"""Collections and their access rules: who reads new documents by default, which groups' curators
manage each one; create, hand over (admins), describe, delete.

The calls of ``appliance/api/routers/collections.py``, audited like them. The default readers are
set when a collection is created (the collection service has no change of them: documents already
indexed keep the readers they were ingested with, so a later change would mislead).
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from ui.admin.common import Console, failed, notice, readers_text, split_list, table
from ui.i18n import t

HEADERS = ["c_h_name", "c_h_default_readers", "c_h_owners", "c_h_description", "c_h_documents", "c_h_chunks"]
SHOWN = 200


def collection_rows(items: list[dict[str, Any]], lang: str = "en") -> list[list[Any]]:
    return [
        [
            c["name"],
            readers_text(lang, c["default_acl"]),
            ", ".join(c["owners"]) or t(lang, "c_admins_only"),
            c["description"],
            c["documents"],
            c["chunks"],
        ]
        for c in items
    ]


def build_collections(console: Console) -> dict[str, Any]:
    service = console.container.collections
    jobs = console.container.jobs
    tr = console.labels
    colls = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True, elem_id="kb-colls-table")
    empty = gr.HTML(elem_id="kb-colls-empty")
    with gr.Row():
        name = tr(gr.Textbox(label="Collection", elem_id="kb-coll-name"), label="collection")
        readers = tr(
            gr.Textbox(label="Default readers", elem_id="kb-coll-readers"), label="c_default_readers"
        )
        owners = tr(gr.Textbox(label="Owner groups", elem_id="kb-coll-owners"), label="c_owner_groups")
        description = tr(gr.Textbox(label="Description"), label="c_h_description")
    with gr.Row():
        create = tr(gr.Button("Create", variant="primary", elem_id="kb-coll-create"), value="c_create")
        save = tr(
            gr.Button("Save owners and description (admins)", elem_id="kb-coll-save"), value="c_coll_save"
        )
        delete = tr(
            gr.Button("Delete with its documents", variant="stop", elem_id="kb-coll-delete"),
            value="c_coll_delete",
        )
    status = gr.HTML(elem_id="kb-colls-status")

    def rows(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        lang = console.lang(request)
        got = collection_rows(service.list(SHOWN, 0, principal)[0], lang)
        hint = notice(t(lang, "c_colls_empty")) if not got else ""
        return [table(lang, HEADERS, got), hint]

    async def refresh(request: gr.Request) -> list[Any]:
        return await asyncio.to_thread(rows, request)

    async def run(
        request: gr.Request, action: str, target: str, call: Any, done: str, **data: Any
    ) -> list[Any]:
        try:
            await asyncio.to_thread(lambda: console.act(request, action, target, call, **data))
            return [*await asyncio.to_thread(rows, request), notice(done)]
        except Exception as exc:
            return [gr.update(), gr.update(), failed(exc, console.lang(request))]

    async def on_create(n: str, r: str, o: str, d: str, request: gr.Request) -> list[Any]:
        n = (n or "").strip()
        return await run(
            request,
            "POST /api/v1/collections",
            "/api/v1/collections",
            lambda p: service.create(n, split_list(r), d or "", split_list(o), principal=p),
            console.t(request, "c_coll_created", name=n),
        )

    async def on_save(n: str, o: str, d: str, request: gr.Request) -> list[Any]:
        n = (n or "").strip()
        return await run(
            request,
            "PATCH /api/v1/collections/{name}",
            f"/api/v1/collections/{n}",
            lambda p: service.update(n, split_list(o), d if d else None, principal=p),
            console.t(request, "c_coll_saved", name=n),
        )

    async def on_delete(n: str, request: gr.Request) -> list[Any]:
        n = (n or "").strip()
        return await run(
            request,
            "DELETE /api/v1/collections/{name}",
            f"/api/v1/collections/{n}",
            lambda p: jobs.delete_collection(p, n),
            console.t(request, "c_coll_deleted", name=n),
        )

    async def on_select(evt: gr.SelectData, request: gr.Request) -> list[Any]:
        row = evt.row_value or []
        if len(row) < 4:
            return [gr.update()] * 3
        owner_text = "" if row[2] == console.t(request, "c_admins_only") else row[2]
        return [row[0], owner_text, row[3]]

    create.click(on_create, [name, readers, owners, description], [colls, empty, status])
    save.click(on_save, [name, owners, description], [colls, empty, status])
    delete.click(on_delete, name, [colls, empty, status])
    colls.select(on_select, None, [name, owners, description])
    return {"refresh": refresh, "outputs": [colls, empty]}
