"""Retrieval testing: a question as a chosen user, the chunks with their dense, BM25 and fused
scores, and the access rule that let each through.

The search service is asked once per mode (hybrid, dense, bm25), each time as the chosen user, so
each leg's score is the store's own and nothing the user may not read can appear. Admins may test
as any user; curators only as themselves (their view is what they may read). The test is audited
like a search, with the user it ran as; it is not recorded as that user's query.
"""

from __future__ import annotations

import asyncio
from typing import Any, get_args

import gradio as gr

from appliance.domain import EVERYONE, Forbidden, Principal, ScoredChunk
from appliance.vectorstore.base import SearchMode
from ui.admin.common import Console, failed, notice, readers_text, table
from ui.i18n import t, term

MODES = get_args(SearchMode)
RESULT_HEADERS = [
    "c_h_rank",
    "c_h_title",
    "c_h_collection",
    "c_h_fused",
    "c_h_dense",
    "c_h_bm25",
    "c_h_rule",
    "c_h_chunk",
]
DEPTH = 50  # each leg is searched this deep, so a fused hit's leg scores are found


def access_rule(principal: Principal, chunk: Any, lang: str = "en") -> str:
    """Which of the chunk's readers matched the principal (the rule that let it through)."""
    if principal.is_admin:
        return t(lang, "c_rule_admin")
    acl = tuple(chunk.acl) or (EVERYONE,)
    matched = [a for a in acl if a in set(principal.acl_tokens())]
    if not matched:
        return t(lang, "c_rule_none")
    return readers_text(lang, matched)


def score_rows(
    principal: Principal, legs: dict[str, list[ScoredChunk]], k: int, lang: str = "en"
) -> list[list[Any]]:
    by_mode = {mode: {h.chunk.id: h.score for h in hits} for mode, hits in legs.items()}
    rows = []
    for i, hit in enumerate(legs["hybrid"][:k], start=1):
        c = hit.chunk

        def leg(mode: str, chunk_id: str = c.id) -> str:
            score = by_mode[mode].get(chunk_id)
            return "—" if score is None else f"{score:.4f}"

        text = " ".join(c.text.split())
        rows.append(
            [
                i,
                c.title,
                c.collection,
                f"{hit.score:.4f}",
                leg("dense"),
                leg("bm25"),
                access_rule(principal, c, lang),
                text[:300] + ("…" if len(text) > 300 else ""),
            ]
        )
    return rows


def build_retrieval(console: Console) -> dict[str, Any]:
    container = console.container
    tr = console.labels
    with gr.Row():
        question = tr(gr.Textbox(label="Question", scale=3, elem_id="kb-rt-question"), label="c_question")
        user = tr(
            gr.Dropdown([], label="As user", allow_custom_value=False, elem_id="kb-rt-user"),
            label="c_as_user",
        )
        coll = tr(gr.Dropdown([], label="Collection", elem_id="kb-rt-collection"), label="collection")
        k = tr(gr.Slider(1, 20, value=5, step=1, label="Chunks"), label="c_h_chunks")
        run = tr(gr.Button("Search", variant="primary", elem_id="kb-rt-run"), value="c_search")
    status = gr.HTML(elem_id="kb-rt-status")
    results = gr.Dataframe(
        headers=RESULT_HEADERS, value=[], interactive=False, wrap=True, max_chars=300, elem_id="kb-rt-table"
    )

    def users_for(principal: Principal) -> list[str]:
        if principal.is_admin:
            return [u["name"] for u in container.identity.list_users() if not u.get("disabled")]
        return [principal.name]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        names = await asyncio.to_thread(users_for, principal)
        colls = await asyncio.to_thread(container.collections.visible_names, principal)
        default = container.settings.rag.default_collection
        return [
            gr.update(choices=names, value=principal.name),
            gr.update(choices=colls, value=default if default in colls else (colls[0] if colls else None)),
        ]

    async def on_run(q: str, as_user: str | None, c: str | None, n: float, request: gr.Request) -> list[Any]:
        lang = console.lang(request)
        if not (q or "").strip():
            return [gr.update(), notice(t(lang, "c_type_question"), "error")]
        count = int(n or 5)

        def search(caller: Principal) -> tuple[Principal, dict[str, list[ScoredChunk]]]:
            if not caller.is_admin and as_user not in (None, caller.name):
                raise Forbidden("curators test retrieval as themselves only")
            target = (
                caller if not as_user or as_user == caller.name else container.identity.principal(as_user)
            )
            legs = {
                mode: container.search.search(
                    q, target, c or None, count if mode == "hybrid" else DEPTH, None, mode
                )[0]
                for mode in MODES
            }
            return target, legs

        try:
            target, legs = await asyncio.to_thread(
                console.act,
                request,
                "POST /api/v1/search",
                "/api/v1/search",
                search,
                as_user=as_user,
                collection=c,
                test=True,
            )
        except Exception as exc:
            return [gr.update(), failed(exc, lang)]
        rows = score_rows(target, legs, count, lang)
        where = c or container.settings.rag.default_collection
        text = t(
            lang,
            "c_rt_found",
            n=len(rows),
            user=target.name,
            role=term(lang, "c_role_", target.role),
            collection=where,
        )
        return [table(lang, RESULT_HEADERS, rows), notice(text if rows else t(lang, "c_rt_none"))]

    run.click(on_run, [question, user, coll, k], [results, status])
    question.submit(on_run, [question, user, coll, k], [results, status])
    return {"refresh": refresh, "outputs": [user, coll], "question": question, "user": user}
