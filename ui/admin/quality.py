"""Quality (admins): run an evaluation on a golden set and compare it with the previous run, and
read thumbs-down feedback with its question, answer and retrieved chunks, one click from retrieval
testing.

The evaluation is ``POST /api/v1/eval``'s own (``appliance.evaluation_runs.run_eval``) as the
signed-in admin: the same result file ``<data dir>/eval/<date>-<set>.json``, gated on the previous
run of the set (the newest result file measured with the same k, mode and questions). A set is
one stored in ``<data dir>/eval/sets/`` or an uploaded JSONL file (named after the file).
Retrieval alone takes seconds; with answers every question is also answered by the model.
Feedback is the list ``GET /api/v1/feedback`` gives admins (``ConversationStore.list_feedback``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast, get_args

import gradio as gr

from appliance.domain import InvalidRequest
from appliance.evaluation import load_qa, set_name
from appliance.evaluation_runs import previous_result, run_eval, run_name, stored_set, stored_sets
from appliance.vectorstore.base import SearchMode
from ui.admin.common import Console, esc, failed, notice, table
from ui.i18n import t, term, term_choices

FEEDBACK_HEADERS = [
    "c_h_id",
    "c_h_when",
    "c_h_user",
    "c_h_question",
    "c_h_answer",
    "c_h_comment",
    "c_h_retrieved",
]
SHOWN = 100
MODES = list(get_args(SearchMode))
UPLOADED = ""  # the set picker's value when the uploaded file is the set
MAX_DROP = 0.02  # as POST /api/v1/eval's default


def _metric_rows(now: dict[str, Any], before: dict[str, Any] | None) -> list[tuple[str, float, float | None]]:
    rows: list[tuple[str, float, float | None]] = []
    for section, names in (
        ("retrieval", ("hit@1", "hit@k", "mrr")),
        ("generation", ("answer_contains", "citation_correct")),
    ):
        current = now.get(section) or {}
        earlier = (before or {}).get(section) or {}
        for name in names:
            if name in current:
                old = earlier.get(name)
                rows.append(
                    (name, float(current[name]), float(old) if isinstance(old, int | float) else None)
                )
    return rows


def compare_html(now: dict[str, Any], before: dict[str, Any] | None, lang: str = "en") -> str:
    """The run's metrics beside the previous run's, the gate's verdict and the questions missed."""
    names = {
        "hit@1": "hit@1",
        "hit@k": f"hit@{now['k']}",
        "mrr": "MRR",
        "answer_contains": t(lang, "c_m_answer"),
        "citation_correct": t(lang, "c_m_citation"),
    }
    cells = []
    for name, value, old in _metric_rows(now, before):
        if old is None:
            prev, delta, kind = "—", "", ""
        else:
            diff = value - old
            prev, delta = f"{old:.4f}", f"{'+' if diff >= 0 else ''}{diff:.4f}"
            kind = "kb-up" if diff > 0 else "kb-down" if diff < 0 else ""
        cells.append(
            f'<tr data-metric="{esc(name)}"><td>{esc(names[name])}</td><td>{value:.4f}</td>'
            f'<td>{prev}</td><td class="{kind}">{delta}</td></tr>'
        )
    head = (
        f"<tr><th>{esc(t(lang, 'c_metric'))}</th><th>{esc(t(lang, 'c_this_run'))}</th>"
        f"<th>{esc(t(lang, 'c_previous_run'))}</th><th>{esc(t(lang, 'c_change'))}</th></tr>"
    )
    about = t(
        lang,
        "c_eval_about",
        set=now["set"],
        n=now["questions"],
        k=now["k"],
        mode=term(lang, "c_mode_", now["mode"]),
        s=now["elapsed_s"],
    )
    parts = [f"<p>{esc(about)}</p>", f'<table class="kb-eval-table">{head}{"".join(cells)}</table>']
    gate = now.get("gate")
    if before is None:
        parts.append(f"<p>{esc(t(lang, 'c_eval_first'))}</p>")
    elif gate is not None:
        verdict = "c_gate_passed" if gate["passed"] else "c_gate_failed"
        parts.append(
            notice(
                t(lang, verdict, drop=gate["max_drop"], date=before.get("date", "")),
                "ok" if gate["passed"] else "error",
            )
        )
        newly = "".join(f"<li>{esc(q)}</li>" for q in gate["newly_missed"][:20])
        if newly:
            parts.append(f"<h4>{esc(t(lang, 'c_newly_missed'))}</h4><ul>{newly}</ul>")
    misses = [r for r in now["items"] if r["rank"] is None]
    if misses:
        missed = "".join(
            f"<li>{esc(r['question'])} → {esc(t(lang, 'c_expected', doc=r['doc']))}</li>" for r in misses[:20]
        )
        parts.append(f"<h4>{esc(t(lang, 'c_missed', n=len(misses)))}</h4><ul>{missed}</ul>")
    wrong = [r for r in now["items"] if r.get("answer_ok") is False]
    if wrong:
        listed = "".join(f"<li>{esc(r['question'])}</li>" for r in wrong[:20])
        parts.append(f"<h4>{esc(t(lang, 'c_wrong_answers', n=len(wrong)))}</h4><ul>{listed}</ul>")
    parts.append(
        f"<p><small>{esc(t(lang, 'c_result_file', name=Path(str(now.get('result_file', ''))).name))}</small></p>"
    )
    return f'<div class="kb-eval" id="kb-eval-result">{"".join(parts)}</div>'


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
    tr = console.labels
    tr(gr.Markdown("### Evaluation on a golden set"), value="c_eval_heading")
    with gr.Row():
        chosen = tr(
            gr.Dropdown([], label="Stored question set", elem_id="kb-eval-set"),
            label="c_eval_set",
            info="c_eval_set_info",
        )
        golden = tr(
            gr.File(
                label="Question set (JSONL)", file_types=[".jsonl"], type="filepath", elem_id="kb-eval-file"
            ),
            label="c_eval_file",
        )
    with gr.Row():
        coll = tr(gr.Dropdown([], label="Collection", elem_id="kb-eval-collection"), label="collection")
        k = gr.Slider(1, 20, value=5, step=1, label="k")
        mode = tr(
            gr.Dropdown(MODES, value="hybrid", label="Mode", elem_id="kb-eval-mode"),
            label="c_mode",
            choices=term_choices("c_mode_", MODES),
        )
        generate = tr(
            gr.Checkbox(
                label="Also judge answers and citations (slow)", value=False, elem_id="kb-eval-generate"
            ),
            label="c_eval_generate",
        )
        run = tr(gr.Button("Run evaluation", variant="primary", elem_id="kb-eval-run"), value="c_eval_run")
    report = gr.HTML(elem_id="kb-eval-report")
    tr(gr.Markdown("### Thumbs-down feedback"), value="c_feedback_heading")
    feedback_table = gr.Dataframe(
        headers=FEEDBACK_HEADERS, value=[], interactive=False, wrap=True, max_chars=200, elem_id="kb-feedback"
    )
    with gr.Row():
        picked = tr(
            gr.Textbox(label="Question of the selected feedback", interactive=False), label="c_picked"
        )
        asked_by = tr(gr.Textbox(label="Asked by", interactive=False), label="c_asked_by")
        to_retrieval = tr(
            gr.Button("Test this question in retrieval testing", elem_id="kb-feedback-retest"),
            value="c_retest",
        )
    status = gr.HTML()

    def feedback() -> list[list[Any]]:
        return feedback_rows(c.conversations.list_feedback(SHOWN, 0, "down").items)

    async def refresh(request: gr.Request) -> list[Any]:
        if not console.curator(request).is_admin:
            return [gr.update()] * 3
        lang = console.lang(request)
        names = await asyncio.to_thread(c.collections.names)
        sets = await asyncio.to_thread(stored_sets, c.settings.data_dir)
        default = c.settings.rag.default_collection
        return [
            table(lang, FEEDBACK_HEADERS, await asyncio.to_thread(feedback)),
            gr.update(choices=names, value=default),
            gr.update(
                choices=[(t(lang, "c_eval_uploaded"), UPLOADED), *[(n, n) for n in sets]], value=UPLOADED
            ),
        ]

    async def on_run(
        stored: str | None,
        path: str | None,
        name: str | None,
        n: float,
        m: str,
        answers: bool,
        request: gr.Request,
    ) -> str:
        lang = console.lang(request)
        try:
            # The admin check (and the audit of a refusal) of the REST route's AdminDep.
            principal = await asyncio.to_thread(
                console.act, request, "", "/api/v1/eval", lambda p: p, True, False
            )
            data_dir = c.settings.data_dir
            if path:
                items = await asyncio.to_thread(load_qa, Path(path))
                label = run_name(set_name(Path(path)))
            elif stored:
                items = await asyncio.to_thread(stored_set, data_dir, stored)
                label = stored
            else:
                raise InvalidRequest(t(lang, "c_eval_choose"))
            k_now = int(n)
            mode_now = cast(SearchMode, m if m in MODES else "hybrid")
            found = await asyncio.to_thread(previous_result, data_dir, label, k_now, mode_now, len(items))
            before, before_path = found if found else (None, None)
            got = await run_eval(
                c.search,
                c.rag if answers else None,
                principal,
                data_dir,
                items,
                label,
                name or c.settings.rag.default_collection,
                k_now,
                mode_now,
                bool(answers),
                before,
                MAX_DROP,
                str(before_path) if before_path else "inline",
            )
        except Exception as exc:
            return failed(exc, lang)
        console.audit(
            principal,
            "POST /api/v1/eval",
            "/api/v1/eval",
            200,
            collection=name,
            set=label,
            generate=bool(answers),
        )
        return compare_html(got, before, lang)

    async def on_select(evt: gr.SelectData) -> list[Any]:
        row = evt.row_value or []
        return [row[3], row[2]] if len(row) > 3 else [gr.update(), gr.update()]

    async def on_retest(question: str, user: str, request: gr.Request) -> list[Any]:
        if not question:
            return [gr.update()] * 3 + [notice(console.t(request, "c_select_feedback"), "error")]
        return [question, gr.update(value=user), gr.Tabs(selected="retrieval"), ""]

    run.click(on_run, [chosen, golden, coll, k, mode, generate], report)
    feedback_table.select(on_select, None, [picked, asked_by])
    to_retrieval.click(
        on_retest, [picked, asked_by], [retest["question"], retest["user"], retest["tabs"], status]
    )
    return {"refresh": refresh, "outputs": [feedback_table, coll, chosen]}
