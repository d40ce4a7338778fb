"""`appliance eval`: retrieval (and optionally answer) quality over a labelled question set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)


def eval_command(
    qa_file: Annotated[Path, typer.Argument(help='JSON lines {"question", "doc", "answer_any": [...]}.')],
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Knowledge base (collection).")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Results judged per question.")] = 5,
    no_generate: Annotated[
        bool, typer.Option("--no-generate", help="Judge retrieval only; do not run the model.")
    ] = False,
    mode: Annotated[
        str, typer.Option("--mode", help="Retrieval to judge: hybrid, dense or bm25 (ablation).")
    ] = "hybrid",
    user: Annotated[
        str | None, typer.Option("--user", help="Act as this user (default: local administrator).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """Report hit@1, hit@k and MRR by document; with generation also answer and citation rates."""
    import asyncio

    from appliance.cli import _emit, _fail, _local, _principal, _remote, _settings
    from appliance.domain import ApplianceError
    from appliance.evaluation import evaluate, load_qa, summary_text
    from appliance.rag.pipeline import citation_dicts

    if mode not in ("hybrid", "dense", "bm25"):
        _fail(f"--mode must be hybrid, dense or bm25, not {mode!r}", 2)
    try:
        items = load_qa(qa_file)
    except ApplianceError as exc:
        _fail(exc.message, 2)
    settings = _settings()
    name = collection or settings.rag.default_collection
    remote = _remote(settings, user)
    container: Any = None
    if remote:

        def search(question: str, n: int) -> list[dict[str, Any]]:
            body = {"query": question, "collection": name, "k": n, "mode": mode}
            return list(remote.post("/api/v1/search", body)["citations"])

        def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
            result = remote.post("/api/v1/ask", {"question": question, "collection": name})
            return result["answer"], result["citations"]

    else:
        container = _local(settings)
        principal = _principal(user)

        def search(question: str, n: int) -> list[dict[str, Any]]:
            hits, _ = container.retriever.search(question, principal, name, n, None, mode)
            return citation_dicts(hits)

        def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
            result = asyncio.run(container.rag.ask(question, principal, collection=name))
            return result.answer, result.citations

    try:
        report = evaluate(items, search, k, None if no_generate else ask, mode)
    except ApplianceError as exc:
        _fail(exc.message)
    finally:
        if container is not None:
            container.close()
    _emit(report.as_dict(), as_json, summary_text(report))
