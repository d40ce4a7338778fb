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

from appliance.domain import EVERYONE, Principal
from ui.admin.common import Console, failed, notice, split_list

HEADERS = ["name", "default readers", "owner groups", "description", "documents", "chunks"]
SHOWN = 200


def collection_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            c["name"],
            ", ".join("everyone signed in" if a == EVERYONE else a for a in c["default_acl"]),
            ", ".join(c["owners"]) or "(admins only)",
            c["description"],
            c["documents"],
            c["chunks"],
        ]
        for c in items
    ]


def build_collections(console: Console) -> dict[str, Any]:
    service = console.container.collections
    jobs = console.container.jobs
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True, elem_id="kb-colls-table")
    with gr.Row():
        name = gr.Textbox(label="Collection", elem_id="kb-coll-name")
        readers = gr.Textbox(
            label="Default readers of new documents (group:NAME, user:NAME; empty: everyone signed in)",
            elem_id="kb-coll-readers",
        )
        owners = gr.Textbox(label="Owner groups (their curators manage it)", elem_id="kb-coll-owners")
        description = gr.Textbox(label="Description")
    with gr.Row():
        create = gr.Button("Create", variant="primary", elem_id="kb-coll-create")
        save = gr.Button("Save owners and description (admins)", elem_id="kb-coll-save")
        delete = gr.Button("Delete with its documents", variant="stop", elem_id="kb-coll-delete")
    status = gr.HTML(elem_id="kb-colls-status")

    def rows(principal: Principal) -> list[list[Any]]:
        return collection_rows(service.list(SHOWN, 0, principal)[0])

    async def refresh(request: gr.Request) -> list[Any]:
        return [await asyncio.to_thread(rows, console.curator(request))]

    async def run(
        request: gr.Request, action: str, target: str, call: Any, done: str, **data: Any
    ) -> list[Any]:
        try:
            await asyncio.to_thread(lambda: console.act(request, action, target, call, **data))
            return [await asyncio.to_thread(rows, console.curator(request)), notice(done)]
        except Exception as exc:
            return [gr.update(), failed(exc)]

    async def on_create(n: str, r: str, o: str, d: str, request: gr.Request) -> list[Any]:
        n = (n or "").strip()
        return await run(
            request,
            "POST /api/v1/collections",
            "/api/v1/collections",
            lambda p: service.create(n, split_list(r), d or "", split_list(o), principal=p),
            f"Collection {n} created.",
        )

    async def on_save(n: str, o: str, d: str, request: gr.Request) -> list[Any]:
        n = (n or "").strip()
        return await run(
            request,
            "PATCH /api/v1/collections/{name}",
            f"/api/v1/collections/{n}",
            lambda p: service.update(n, split_list(o), d if d else None, principal=p),
            f"Collection {n} saved.",
        )

    async def on_delete(n: str, request: gr.Request) -> list[Any]:
        n = (n or "").strip()
        return await run(
            request,
            "DELETE /api/v1/collections/{name}",
            f"/api/v1/collections/{n}",
            lambda p: jobs.delete_collection(p, n),
            f"Collection {n} deleted.",
        )

    async def on_select(evt: gr.SelectData) -> list[Any]:
        row = evt.row_value or []
        if len(row) < 4:
            return [gr.update()] * 3
        owner_text = "" if row[2] == "(admins only)" else row[2]
        return [row[0], owner_text, row[3]]

    create.click(on_create, [name, readers, owners, description], [table, status])
    save.click(on_save, [name, owners, description], [table, status])
    delete.click(on_delete, name, [table, status])
    table.select(on_select, None, [name, owners, description])
    return {"refresh": refresh, "outputs": [table]}
