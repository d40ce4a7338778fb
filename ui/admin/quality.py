"""Quality (admins): run a retrieval evaluation on a golden set and compare it with the previous
run, and read thumbs-down feedback with its question, answer and retrieved chunks, one click from
retrieval testing.

The evaluation is ``appliance eval --no-generate`` (``appliance.evaluation.evaluate`` over the
search service, as the signed-in admin), so it takes seconds, not minutes of generation. The
previous run is this browser tab's (``gr.State``). Feedback is the list ``GET /api/v1/feedback``
gives admins (``ConversationStore.list_feedback``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import gradio as gr

from appliance.domain import Principal
from appliance.evaluation import evaluate, load_qa
from appliance.rag.pipeline import citation_dicts
from ui.admin.common import Console, esc, failed, notice

FEEDBACK_HEADERS = ["id", "when", "user", "question", "answer", "comment", "retrieved chunks"]
SHOWN = 100
METRICS = ("hit@1", "hit@k", "mrr")


def compare_html(now: dict[str, Any], before: dict[str, Any] | None) -> str:
    cells = []
    for name in METRICS:
        value = now["retrieval"][name]
        delta = ""
        if before is not None:
            diff = value - before["retrieval"][name]
            delta = f" <small>({'+' if diff >= 0 else ''}{diff:.4f} vs previous run)</small>"
        cells.append(f"<li><b>{esc(name)}</b>: {value:.4f}{delta}</li>")
    misses = [r for r in now["items"] if r["rank"] is None]
    missed = "".join(f"<li>{esc(r['question'])} → expected {esc(r['doc'])}</li>" for r in misses[:20])
    head = f"<p>{now['questions']} questions, k={now['k']}, mode {esc(now['mode'])}.</p>"
    tail = f"<h4>Missed</h4><ul>{missed}</ul>" if misses else ""
    return f'<div class="kb-eval">{head}<ul>{"".join(cells)}</ul>{tail}</div>'


def feedback_rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            f["id"],
            (f["created_at"] or "")[:19],
            f["user"],
            f["question"] or "",
            (f["answer"] or "")[:400],
            f["comment"] or "",
            ", ".join(f["chunks"]),
        ]
        for f in items
    ]


def build_quality(console: Console, retest: dict[str, Any]) -> dict[str, Any]:
    """``retest``: the retrieval page's ``question`` and ``user`` boxes and the ``tabs`` to switch."""
    c = console.container
    gr.Markdown("### Evaluation on a golden set (lines of `{question, doc, answer_any}`)")
    with gr.Row():
        golden = gr.File(
            label="Question set (JSONL)", file_types=[".jsonl"], type="filepath", elem_id="kb-eval-file"
        )
        coll = gr.Dropdown([], label="Collection", elem_id="kb-eval-collection")
        k = gr.Slider(1, 20, value=5, step=1, label="k")
        run = gr.Button("Run evaluation", variant="primary", elem_id="kb-eval-run")
    report = gr.HTML(elem_id="kb-eval-report")
    previous = gr.State(None)
    gr.Markdown("### Thumbs-down feedback")
    table = gr.Dataframe(
        headers=FEEDBACK_HEADERS, value=[], interactive=False, wrap=True, elem_id="kb-feedback"
    )
    with gr.Row():
        picked = gr.Textbox(label="Question of the selected feedback", interactive=False)
        asked_by = gr.Textbox(label="Asked by", interactive=False)
        to_retrieval = gr.Button("Test this question in retrieval testing", elem_id="kb-feedback-retest")
    status = gr.HTML()

    def feedback() -> list[list[Any]]:
        return feedback_rows(c.conversations.list_feedback(SHOWN, 0, "down").items)

    async def refresh(request: gr.Request) -> list[Any]:
        if not console.curator(request).is_admin:
            return [gr.update()] * 2
        names = await asyncio.to_thread(c.collections.names)
        default = c.settings.rag.default_collection
        return [await asyncio.to_thread(feedback), gr.update(choices=names, value=default)]

    async def on_run(
        path: str | None, name: str | None, n: float, before: Any, request: gr.Request
    ) -> list[Any]:
        if not path:
            return [notice("Choose a question set first.", "error"), before]

        def run_eval(principal: Principal) -> dict[str, Any]:
            items = load_qa(Path(path))

            def search(question: str, count: int) -> list[dict[str, Any]]:
                return citation_dicts(c.search.search(question, principal, name or None, count)[0])

            return evaluate(items, search, int(n)).as_dict()

        try:
            got = await asyncio.to_thread(
                console.act, request, "POST /api/v1/eval", "/api/v1/eval", run_eval, True, collection=name
            )
        except Exception as exc:
            return [failed(exc), before]
        return [compare_html(got, before), got]

    async def on_select(evt: gr.SelectData) -> list[Any]:
        row = evt.row_value or []
        return [row[3], row[2]] if len(row) > 3 else [gr.update(), gr.update()]

    async def on_retest(question: str, user: str) -> list[Any]:
        if not question:
            return [gr.update()] * 3 + [notice("Select a feedback row first.", "error")]
        return [question, gr.update(value=user), gr.Tabs(selected="retrieval"), ""]

    run.click(on_run, [golden, coll, k, previous], [report, previous])
    table.select(on_select, None, [picked, asked_by])
    to_retrieval.click(
        on_retest, [picked, asked_by], [retest["question"], retest["user"], retest["tabs"], status]
    )
    return {"refresh": refresh, "outputs": [table, coll]}
