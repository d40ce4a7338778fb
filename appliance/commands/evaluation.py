"""``appliance eval``: retrieval (and optionally answer) quality over a labelled question set."""

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
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report hit@1, hit@k and MRR by document; with generation also answer and citation rates."""
    # Imported here: the RAG pipeline pulls in the retrieval stack.
    from appliance.evaluation import evaluate, load_qa, summary_text
    from appliance.rag.pipeline import citation_dicts

    cli = AppContext.of(ctx)
    search_mode = check_mode(mode)
    try:
        items = load_qa(qa_file)
    except ApplianceError as exc:
        cli.fail(exc.message, 2)
    name = collection or cli.settings.rag.default_collection
    remote = cli.remote(user)
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

        def search(question: str, n: int) -> list[dict[str, Any]]:
            hits, _ = container.retriever.search(question, principal, name, n, None, search_mode)
            return citation_dicts(hits)

        def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
            result = asyncio.run(container.rag.ask(question, principal, collection=name))
            return result.answer, result.citations

    try:
        report = evaluate(items, search, k, None if no_generate else ask, mode)
    except ApplianceError as exc:
        cli.fail(exc.message)
    finally:
        cli.close()
    cli.emit(report.as_dict(), as_json, summary_text(report))
