"""``appliance eval``: retrieval (and optionally answer) quality over a labelled question set,
written to a dated result file and, with ``--baseline``, a gate: exit code 3 when a metric drops
more than ``--max-drop`` below the baseline's."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.commands.context import AppContext
from appliance.commands.options import CollectionOpt, JsonOpt, UserOpt, check_mode
from appliance.domain import ApplianceError


def eval_command(
    ctx: typer.Context,
    qa_file: Annotated[Path, typer.Argument(help='JSON lines {"question", "doc", "answer_any": [...]}.')],
    collection: CollectionOpt = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Results judged per question.")] = 5,
    no_generate: Annotated[
        bool, typer.Option("--no-generate", help="Judge retrieval only; do not run the model.")
    ] = False,
    mode: Annotated[
        str, typer.Option("--mode", help="Retrieval to judge: hybrid, dense or bm25 (ablation).")
    ] = "hybrid",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder of the result file <date>-<set>.json (default <data dir>/eval)."),
    ] = None,
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="An earlier result file of this set: fail (exit 3) on a drop."),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option("--max-drop", min=0, max=1, help="Largest drop of any metric the gate lets pass."),
    ] = 0.02,
    label: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Set name in the result file (default: the file's stem, or its folder's for qa.jsonl).",
        ),
    ] = None,
    tune_weight: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Instead: hybrid retrieval at a grid of BM25 weights; prints the best.",
        ),
    ] = False,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="With --tune: store the best weight as the collection's own."),
    ] = False,
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report hit@1, hit@k and MRR by document; with generation also answer and citation rates.
    Writes the report to <out>/<date>-<set>.json; with --baseline exits 3 when a metric fell more
    than --max-drop below the baseline's."""
    # Imported here: the RAG pipeline pulls in the retrieval stack.
    from appliance.evaluation import load_baseline, load_qa, report_text, run, set_name
    from appliance.rag.pipeline import citation_dicts

    cli = AppContext.of(ctx)
    retrieval = check_mode(mode)
    try:
        items = load_qa(qa_file)
        before = load_baseline(baseline) if baseline is not None else None
    except ApplianceError as exc:
        cli.fail(exc.message, 2)
    name = collection or cli.settings.rag.default_collection
    remote = cli.remote(user)
    if apply and not tune_weight:
        cli.fail("--apply stores what --tune found: give both", 2)
    if remote and tune_weight:
        cli.fail("--tune searches the store directly: run it while `appliance serve` is stopped")
    if remote:

        def search(question: str, n: int) -> list[dict[str, Any]]:
            body = {"query": question, "collection": name, "k": n, "mode": mode}
            return list(remote.post("/api/v1/search", body)["citations"])

        def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
            result = remote.post("/api/v1/ask", {"question": question, "collection": name})
            return result["answer"], result["citations"]

    else:
        container = cli.local()
        principal = cli.principal(user)
        if tune_weight:
            _tune(cli, container, items, k, principal, name, as_json, apply)
            return

        def search(question: str, n: int) -> list[dict[str, Any]]:
            hits, _ = container.retriever.search(question, principal, name, n, None, retrieval)
            return citation_dicts(hits)

        def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
            result = asyncio.run(container.rag.ask(question, principal, collection=name))
            return result.answer, result.citations

    try:
        data = run(
            items,
            search,
            k,
            None if no_generate else ask,
            mode,
            label or set_name(qa_file),
            out or cli.settings.data_dir / "eval",
            before,
            str(baseline),
            max_drop,
        )
    except ApplianceError as exc:
        cli.fail(exc.message)
    finally:
        cli.close()
    cli.emit(data, as_json, report_text(data))
    if "gate" in data and not data["gate"]["passed"]:
        raise typer.Exit(3)


def _tune(
    cli: AppContext,
    container: Any,
    items: list[Any],
    k: int,
    principal: Any,
    name: str,
    as_json: bool,
    apply: bool,
) -> None:
    """``--tune``: the retriever with each BM25 weight of the grid, judged on the set; with
    ``--apply`` the best is stored as the collection's own weight."""
    from dataclasses import replace

    from appliance.evaluation import tune, tune_text
    from appliance.rag.pipeline import citation_dicts

    base = container.retriever

    def search_at(weight: float) -> Any:
        fusion = replace(base.fusion, bm25_weight=weight)
        retriever = replace(base, fusion=fusion, collection_weight=None)

        def search(question: str, n: int) -> list[dict[str, Any]]:
            return citation_dicts(retriever.search(question, principal, name, n)[0])

        return search

    try:
        data = {**tune(items, search_at, k, base.fusion_for(name).bm25_weight), "collection": name}
        if apply:
            container.collections.update(name, bm25_weight=data["best"]["bm25_weight"], principal=principal)
            data["applied"] = True
    except ApplianceError as exc:
        cli.fail(exc.message)
    finally:
        cli.close()
    cli.emit(data, as_json, tune_text(data))
