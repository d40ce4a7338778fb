"""Sources: list, add, edit, delete, test connection, sync now, schedule, and live job progress.

Every action is the service method its REST route calls (``IngestionJobs.add_source``,
``sync_source``, ``remove_source``...), audited like that route. A connector kind's settings are
the parameters of its constructor (the registry in ``connectors``), shown as an editable table;
settings only an operator may change (``SETTINGS_ONLY``) and ones the appliance fills in itself
are left out. "Test connection" builds the connector exactly as adding the source would (same
reach and egress checks) and lists its first items without ingesting anything.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from typing import Any

import gradio as gr

import connectors
from appliance.ingestion.connect import SETTINGS_ONLY
from appliance.security.acl import is_curator
from ui.admin.common import Console, collection_names, esc, failed, notice, split_list
from ui.admin.progress import jobs_html

KINDS = [k for k in connectors.REGISTRY if k != "upload"]  # uploads come in through Documents
FILLED_IN = {"acl", "max_file_bytes", "cache_dir", "extensions"}  # from the settings or the ACL box
TEST_ITEMS = 10
SHOWN_JOBS = 6
SOURCE_HEADERS = ["id", "kind", "source", "collection", "readers", "every (s)", "last sync", "last job"]


def option_rows(kind: str, stored: dict[str, Any] | None = None) -> list[list[str]]:
    """The settings a caller may give a connector of ``kind``, with the stored or default value."""
    rows = []
    for name, p in inspect.signature(connectors.REGISTRY[kind]).parameters.items():
        if (
            name in FILLED_IN
            or name in SETTINGS_ONLY
            or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ):
            continue
        value = (stored or {}).get(name, None if p.default is p.empty else p.default)
        rows.append([name, _text(value)])
    return rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def options_from(kind: str, rows: Any) -> dict[str, Any]:
    """The settings the form changed from the defaults (strings: the connectors registry types them)."""
    defaults = dict(option_rows(kind))
    out: dict[str, Any] = {}
    for row in rows or []:
        if len(row) < 2 or not str(row[0] or "").strip():
            continue
        name, value = str(row[0]).strip(), str(row[1] if row[1] is not None else "").strip()
        if value and value != defaults.get(name, ""):
            out[name] = value
    return out


def source_rows(sources: list[Any]) -> list[list[Any]]:
    return [
        [
            s.id,
            s.kind,
            s.spec or s.options.get("root") or s.options.get("start_urls") or s.options.get("repo") or "",
            s.collection,
            ", ".join(s.acl),
            s.interval_s,
            s.last_sync_at.isoformat(timespec="seconds") if s.last_sync_at else "",
            s.last_job_id or "",
        ]
        for s in sources
    ]


def build_sources(console: Console) -> dict[str, Any]:
    jobs = console.container.jobs
    with gr.Row():
        with gr.Column(scale=3):
            table = gr.Dataframe(
                headers=SOURCE_HEADERS,
                value=[],
                interactive=False,
                label="Sources (select one to edit, sync or delete)",
                elem_id="kb-sources-table",
                wrap=True,
            )
            with gr.Row():
                selected = gr.Textbox(label="Selected source", interactive=False, elem_id="kb-source-id")
                sync_btn = gr.Button("Sync now", elem_id="kb-source-sync")
                purge = gr.Checkbox(label="Also remove its documents", value=False)
                delete_btn = gr.Button("Delete", variant="stop", elem_id="kb-source-delete")
            status = gr.HTML(elem_id="kb-source-status")
            gr.Markdown("### Ingestion jobs (live)")
            progress = gr.HTML(jobs_html([]), elem_id="kb-jobs")
        with gr.Column(scale=2):
            gr.Markdown("### Add or edit a source")
            kind = gr.Dropdown(KINDS, value="filesystem", label="Kind", elem_id="kb-source-kind")
            spec = gr.Textbox(
                label="Path or URL (a folder, https://…, s3://bucket/prefix, a git repository, a database URL)",
                placeholder="/srv/shared/handbook",
                elem_id="kb-source-spec",
            )
            options = gr.Dataframe(
                headers=["setting", "value"],
                value=option_rows("filesystem"),
                interactive=True,
                type="array",
                label="Settings of this kind (leave the default to keep it)",
                elem_id="kb-source-options",
            )
            collection = gr.Dropdown(
                [], label="Collection", allow_custom_value=True, elem_id="kb-source-collection"
            )
            allow = gr.Textbox(
                label="Readers (group:NAME, user:NAME; empty: the collection's default)",
                elem_id="kb-source-allow",
            )
            interval = gr.Number(
                value=0, precision=0, minimum=0, label="Sync every (seconds; 0: only on demand)"
            )
            with gr.Row():
                test_btn = gr.Button("Test connection", elem_id="kb-source-test")
                add_btn = gr.Button("Add source", variant="primary", elem_id="kb-source-add")
                save_btn = gr.Button("Save changes", elem_id="kb-source-save")
            test_out = gr.HTML(elem_id="kb-source-test-result")
    timer = gr.Timer(1.0)

    def listing(principal: Any) -> list[list[Any]]:
        return source_rows(jobs.list_sources(principal))

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        rows = await asyncio.to_thread(listing, principal)
        names = await asyncio.to_thread(collection_names, console, principal)
        return [rows, gr.update(choices=names, value=names[0] if names else None)]

    def form_values(k: str, s: str, rows: Any, c: str | None, a: str, every: float | None) -> dict[str, Any]:
        return {
            "kind": None if (s or "").strip() else k,
            "spec": (s or "").strip() or None,
            "options": options_from(k, rows),
            "collection": c or None,
            "acl": split_list(a),
            "interval_s": int(every or 0),
        }

    async def on_kind(k: str) -> Any:
        return option_rows(k)

    async def on_test(k: str, s: str, rows: Any, request: gr.Request) -> str:
        form = form_values(k, s, rows, None, "", 0)

        def probe(principal: Any) -> list[Any]:
            connector = jobs.connector(form["kind"] or "spec", form["spec"], form["options"], principal)
            try:
                return list(itertools.islice(connector.discover(), TEST_ITEMS))
            finally:
                connector.close()

        try:
            items = await asyncio.to_thread(
                console.act, request, "source.test", "/api/v1/sources", probe, kind=k
            )
        except Exception as exc:
            return failed(exc)
        listed = "".join(
            f"<li><code>{esc(i.uri)}</code>{' — refused: ' + esc(i.refused) if i.refused else ''}</li>"
            for i in items
        )
        head = notice(f"Connected: the first {len(items)} items (nothing was ingested).")
        return f'{head}<ul class="kb-test-items">{listed}</ul>'

    async def on_add(
        k: str, s: str, rows: Any, c: str | None, a: str, every: float | None, request: gr.Request
    ) -> list[Any]:
        form = form_values(k, s, rows, c, a, every)

        def add(principal: Any) -> Any:
            return jobs.add_source(
                principal,
                form["kind"],
                form["spec"],
                form["options"],
                form["collection"],
                form["acl"],
                form["interval_s"],
            )

        try:
            source = await asyncio.to_thread(
                console.act, request, "POST /api/v1/sources", "/api/v1/sources", add, kind=k
            )
            job = await asyncio.to_thread(
                console.act,
                request,
                "POST /api/v1/sources/{source_id}/sync",
                f"/api/v1/sources/{source.id}/sync",
                lambda p: jobs.sync_source(p, source.id),
            )
            principal = console.curator(request)
            rows_now = await asyncio.to_thread(listing, principal)
        except Exception as exc:
            return [gr.update(), gr.update(), failed(exc)]
        text = f"Source {source.id} added to {source.collection}; first sync started (job {job.id})."
        return [rows_now, source.id, notice(text)]

    async def on_select(table_value: Any, evt: gr.SelectData, request: gr.Request) -> list[Any]:
        row = evt.row_value if evt.row_value is not None else None
        if not row:
            return [gr.update()] * 8
        try:
            principal = console.curator(request)
            source = await asyncio.to_thread(jobs.source, principal, str(row[0]))
        except Exception as exc:
            return [gr.update()] * 7 + [failed(exc)]
        return [
            source.id,
            source.kind,
            source.spec or "",
            option_rows(source.kind, source.options),
            gr.update(value=source.collection),
            ", ".join(source.acl),
            source.interval_s,
            notice(f"Selected {source.id} ({source.kind} → {source.collection})."),
        ]

    async def on_save(
        sid: str, k: str, s: str, rows: Any, c: str | None, a: str, every: float | None, request: gr.Request
    ) -> list[Any]:
        # Sources have no update: a changed source is added anew and the old one forgotten (its
        # documents stay: they belong to the collection and the source's root, not to its id).
        if not sid:
            return [gr.update(), gr.update(), notice("Select a source first.", "error")]
        form = form_values(k, s, rows, c, a, every)
        try:
            source = await asyncio.to_thread(
                console.act,
                request,
                "POST /api/v1/sources",
                "/api/v1/sources",
                lambda p: jobs.add_source(
                    p,
                    form["kind"],
                    form["spec"],
                    form["options"],
                    form["collection"],
                    form["acl"],
                    form["interval_s"],
                ),
                kind=k,
                replaces=sid,
            )
            await asyncio.to_thread(
                console.act,
                request,
                "DELETE /api/v1/sources/{source_id}",
                f"/api/v1/sources/{sid}",
                lambda p: jobs.remove_source(p, sid, False),
                replaced_by=source.id,
            )
            rows_now = await asyncio.to_thread(listing, console.curator(request))
        except Exception as exc:
            return [gr.update(), gr.update(), failed(exc)]
        return [rows_now, source.id, notice(f"Saved: source {sid} is now {source.id}.")]

    async def on_sync(sid: str, request: gr.Request) -> str:
        if not sid:
            return notice("Select a source first.", "error")
        return await console.attempt(
            request,
            "POST /api/v1/sources/{source_id}/sync",
            f"/api/v1/sources/{sid}/sync",
            lambda p: jobs.sync_source(p, sid),
            lambda job: f"Sync of {sid} started (job {job.id}).",
        )

    async def on_delete(sid: str, wipe: bool, request: gr.Request) -> list[Any]:
        if not sid:
            return [gr.update(), gr.update(), notice("Select a source first.", "error")]
        try:
            await asyncio.to_thread(
                console.act,
                request,
                "DELETE /api/v1/sources/{source_id}",
                f"/api/v1/sources/{sid}",
                lambda p: jobs.remove_source(p, sid, bool(wipe)),
                purge=bool(wipe),
            )
            rows_now = await asyncio.to_thread(listing, console.curator(request))
        except Exception as exc:
            return [gr.update(), gr.update(), failed(exc)]
        return [rows_now, "", notice(f"Source {sid} deleted" + (" with its documents." if wipe else "."))]

    async def on_tick(request: gr.Request) -> Any:
        principal = console.who(request)
        if principal is None or not is_curator(principal):
            return gr.update()  # a refused page polls too; it gets nothing, and asks nothing
        try:
            recent = await asyncio.to_thread(jobs.list_jobs, principal, SHOWN_JOBS)
        except Exception as exc:
            return failed(exc)
        return jobs_html(recent)

    form = [kind, spec, options, collection, allow, interval]
    kind.input(on_kind, kind, options, show_progress="hidden")
    test_btn.click(on_test, [kind, spec, options], test_out)
    add_btn.click(on_add, form, [table, selected, status])
    save_btn.click(on_save, [selected, *form], [table, selected, status])
    table.select(on_select, table, [selected, kind, spec, options, collection, allow, interval, status])
    sync_btn.click(on_sync, selected, status)
    delete_btn.click(on_delete, [selected, purge], [table, selected, status])
    timer.tick(on_tick, None, progress, show_progress="hidden")
    return {"refresh": refresh, "outputs": [table, collection]}
