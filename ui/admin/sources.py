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
from appliance.security.secrets import redact
from ui.admin.common import Console, collection_names, esc, failed, notice, split_list, table
from ui.admin.progress import jobs_html
from ui.i18n import t, term, term_choices

KINDS = [k for k in connectors.REGISTRY if k != "upload"]  # uploads come in through Documents
FILLED_IN = {"acl", "max_file_bytes", "cache_dir", "extensions"}  # from the settings or the ACL box
SOURCE_WIDTHS: list[str | int] = ["13%", "8%", "33%", "9%", "10%", "6%", "12%", "9%"]
TEST_ITEMS = 10
SHOWN_JOBS = 6
SOURCE_HEADERS = [
    "c_h_id",
    "c_h_kind",
    "c_h_source",
    "c_h_collection",
    "c_h_readers",
    "c_h_every",
    "c_h_last_sync",
    "c_h_last_job",
]


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


def source_rows(sources: list[Any], lang: str = "en") -> list[list[Any]]:
    return [
        [
            s.id,
            term(lang, "c_sk_", s.kind),
            redact(
                s.spec or s.options.get("root") or s.options.get("start_urls") or s.options.get("repo") or ""
            ),
            s.collection,
            ", ".join(s.acl),
            s.interval_s,
            s.last_sync_at.isoformat(timespec="minutes").replace("T", " ")[:16] if s.last_sync_at else "",
            s.last_job_id or "",
        ]
        for s in sources
    ]


def build_sources(console: Console) -> dict[str, Any]:
    jobs = console.container.jobs
    tr = console.labels
    # The table gets the whole width (paths are long); the actions and the form share the row below.
    sources_table = tr(
        gr.Dataframe(
            headers=SOURCE_HEADERS,
            value=[],
            interactive=False,
            label="Sources (select one to edit, sync or delete)",
            elem_id="kb-sources-table",
            wrap=True,
            column_widths=SOURCE_WIDTHS,
            max_chars=80,
        ),
        label="c_sources_table",
    )
    empty = gr.HTML(elem_id="kb-sources-empty")
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row():
                selected = tr(
                    gr.Textbox(label="Selected source", interactive=False, elem_id="kb-source-id"),
                    label="c_selected_source",
                )
                sync_btn = tr(gr.Button("Sync now", elem_id="kb-source-sync"), value="c_sync_now")
                purge = tr(gr.Checkbox(label="Also remove its documents", value=False), label="c_purge")
                delete_btn = tr(
                    gr.Button("Delete", variant="stop", elem_id="kb-source-delete"), value="delete"
                )
            status = gr.HTML(elem_id="kb-source-status")
            tr(gr.Markdown("### Ingestion jobs (live)"), value="c_jobs_heading")
            progress = gr.HTML(jobs_html([]), elem_id="kb-jobs")
        with gr.Column(scale=2):
            tr(gr.Markdown("### Add or edit a source"), value="c_add_heading")
            kind = tr(
                gr.Dropdown(KINDS, value="filesystem", label="Kind", elem_id="kb-source-kind"),
                label="c_kind",
                choices=term_choices("c_sk_", KINDS),
            )
            spec = tr(
                gr.Textbox(
                    label="Path or URL",
                    placeholder="/srv/shared/handbook",
                    elem_id="kb-source-spec",
                ),
                label="c_spec",
            )
            options = tr(
                gr.Dataframe(
                    headers=["setting", "value"],
                    value=option_rows("filesystem"),
                    interactive=True,
                    type="array",
                    label="Settings of this kind (leave the default to keep it)",
                    elem_id="kb-source-options",
                ),
                label="c_options",
            )
            collection = tr(
                gr.Dropdown([], label="Collection", allow_custom_value=True, elem_id="kb-source-collection"),
                label="collection",
            )
            allow = tr(gr.Textbox(label="Readers", elem_id="kb-source-allow"), label="c_readers")
            interval = tr(
                gr.Number(
                    value=0,
                    precision=0,
                    minimum=0,
                    label="Sync every (seconds; 0: only on demand)",
                    elem_id="kb-source-interval",
                ),
                label="c_interval",
            )
            with gr.Row():
                test_btn = tr(gr.Button("Test connection", elem_id="kb-source-test"), value="c_test")
                add_btn = tr(
                    gr.Button("Add source", variant="primary", elem_id="kb-source-add"), value="c_add"
                )
                save_btn = tr(gr.Button("Save changes", elem_id="kb-source-save"), value="c_save")
            test_out = gr.HTML(elem_id="kb-source-test-result")
    timer = gr.Timer(1.0)

    def listing(principal: Any, lang: str) -> list[list[Any]]:
        return source_rows(jobs.list_sources(principal), lang)

    def shown(request: gr.Request, rows: list[list[Any]]) -> list[Any]:
        """The table, and what to do next when it is empty (a fresh appliance)."""
        lang = console.lang(request)
        hint = notice(t(lang, "c_sources_empty")) if not rows else ""
        return [table(lang, SOURCE_HEADERS, rows), hint]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        rows = await asyncio.to_thread(listing, principal, console.lang(request))
        names = await asyncio.to_thread(collection_names, console, principal)
        return [*shown(request, rows), gr.update(choices=names, value=names[0] if names else None)]

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
        lang = console.lang(request)

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
            return failed(exc, lang)
        refused = t(lang, "c_test_refused")
        listed = "".join(
            f"<li><code>{esc(i.uri)}</code>{' — ' + esc(refused) + ' ' + esc(i.refused) if i.refused else ''}</li>"
            for i in items
        )
        head = notice(t(lang, "c_test_ok", n=len(items)))
        return f'{head}<ul class="kb-test-items">{listed}</ul>'

    async def on_add(
        k: str, s: str, rows: Any, c: str | None, a: str, every: float | None, request: gr.Request
    ) -> list[Any]:
        form = form_values(k, s, rows, c, a, every)
        lang = console.lang(request)

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
            rows_now = await asyncio.to_thread(listing, principal, lang)
        except Exception as exc:
            return [gr.update(), gr.update(), gr.update(), failed(exc, lang)]
        text = t(lang, "c_source_added", id=source.id, collection=source.collection, job=job.id)
        return [*shown(request, rows_now), source.id, notice(text)]

    async def on_select(evt: gr.SelectData, request: gr.Request) -> list[Any]:
        row = evt.row_value if evt.row_value is not None else None
        if not row:
            return [gr.update()] * 8
        try:
            principal = console.curator(request)
            source = await asyncio.to_thread(jobs.source, principal, str(row[0]))
        except Exception as exc:
            return [gr.update()] * 7 + [failed(exc, console.lang(request))]
        # Secrets are shown masked; given back masked, the stored ones stay (update_source).
        return [
            source.id,
            source.kind,
            redact(source.spec) or "",
            option_rows(source.kind, redact(source.options)),
            gr.update(value=source.collection),
            ", ".join(source.acl),
            source.interval_s,
            notice(
                t(
                    console.lang(request),
                    "c_source_selected",
                    id=source.id,
                    kind=term(console.lang(request), "c_sk_", source.kind),
                    collection=source.collection,
                )
            ),
        ]

    async def on_save(
        sid: str, k: str, s: str, rows: Any, c: str | None, a: str, every: float | None, request: gr.Request
    ) -> list[Any]:
        lang = console.lang(request)
        if not sid:
            return [gr.update(), gr.update(), gr.update(), notice(t(lang, "c_select_source"), "error")]
        form = form_values(k, s, rows, c, a, every)
        try:
            source = await asyncio.to_thread(
                console.act,
                request,
                "PATCH /api/v1/sources/{source_id}",
                f"/api/v1/sources/{sid}",
                lambda p: jobs.update_source(
                    p,
                    sid,
                    k,
                    (s or "").strip(),
                    form["options"],
                    form["collection"],
                    form["acl"],
                    form["interval_s"],
                ),
                kind=k,
            )
            rows_now = await asyncio.to_thread(listing, console.curator(request), lang)
        except Exception as exc:
            return [gr.update(), gr.update(), gr.update(), failed(exc, lang)]
        return [*shown(request, rows_now), source.id, notice(t(lang, "c_source_saved", id=source.id))]

    async def on_sync(sid: str, request: gr.Request) -> str:
        lang = console.lang(request)
        if not sid:
            return notice(t(lang, "c_select_source"), "error")
        return await console.attempt(
            request,
            "POST /api/v1/sources/{source_id}/sync",
            f"/api/v1/sources/{sid}/sync",
            lambda p: jobs.sync_source(p, sid),
            lambda job: t(lang, "c_sync_started", id=sid, job=job.id),
        )

    async def on_delete(sid: str, wipe: bool, request: gr.Request) -> list[Any]:
        lang = console.lang(request)
        if not sid:
            return [gr.update(), gr.update(), gr.update(), notice(t(lang, "c_select_source"), "error")]
        try:
            await asyncio.to_thread(
                console.act,
                request,
                "DELETE /api/v1/sources/{source_id}",
                f"/api/v1/sources/{sid}",
                lambda p: jobs.remove_source(p, sid, bool(wipe)),
                purge=bool(wipe),
            )
            rows_now = await asyncio.to_thread(listing, console.curator(request), lang)
        except Exception as exc:
            return [gr.update(), gr.update(), gr.update(), failed(exc, lang)]
        done = t(lang, "c_source_deleted_purged" if wipe else "c_source_deleted", id=sid)
        return [*shown(request, rows_now), "", notice(done)]

    async def on_tick(request: gr.Request) -> Any:
        principal = console.who(request)
        if principal is None or not is_curator(principal):
            return gr.update()  # a refused page polls too; it gets nothing, and asks nothing
        try:
            recent = await asyncio.to_thread(jobs.list_jobs, principal, SHOWN_JOBS)
        except Exception as exc:
            return failed(exc, console.lang(request))
        return jobs_html(recent, console.lang(request))

    form = [kind, spec, options, collection, allow, interval]
    listed = [sources_table, empty]
    kind.input(on_kind, kind, options, show_progress="hidden")
    test_btn.click(on_test, [kind, spec, options], test_out)
    add_btn.click(on_add, form, [*listed, selected, status])
    save_btn.click(on_save, [selected, *form], [*listed, selected, status])
    sources_table.select(
        on_select, None, [selected, kind, spec, options, collection, allow, interval, status]
    )
    sync_btn.click(on_sync, selected, status)
    delete_btn.click(on_delete, [selected, purge], [*listed, selected, status])
    timer.tick(on_tick, None, progress, show_progress="hidden")
    return {"refresh": refresh, "outputs": [*listed, collection]}
