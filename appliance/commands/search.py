"""``appliance search``: retrieval only, the chunks an answer would be built from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from appliance.commands.context import AppContext
from appliance.commands.options import CollectionOpt, JsonOpt, UserOpt, check_mode
from appliance.commands.output import citations_text
from appliance.domain import ApplianceError


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    collection: CollectionOpt = None,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="Results.")] = 5,
    user: UserOpt = None,
    document_id: Annotated[
        list[str] | None, typer.Option("--document-id", help="Only these documents (repeatable).")
    ] = None,
    uri: Annotated[
        list[str] | None, typer.Option("--uri", help="Only these document URIs (repeatable).")
    ] = None,
    source: Annotated[
        list[str] | None,
        typer.Option("--source", help="Only documents ingested from this folder or URI (repeatable)."),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Only documents changed at or after this ISO date/time.")
    ] = None,
    before: Annotated[
        str | None, typer.Option("--before", help="Only documents changed at or before this ISO date/time.")
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or bm25.")] = "hybrid",
    as_json: JsonOpt = False,
) -> None:
    """Retrieval only: the chunks an answer would be built from."""
    # Imported here: the API schemas and the RAG pipeline pull in FastAPI and the retrieval stack.
    from pydantic import ValidationError

    from appliance.api.schemas.kb import SearchFilters
    from appliance.rag.pipeline import citation_dicts

    cli = AppContext.of(ctx)
    check_mode(mode)
    try:
        filters = SearchFilters(
            document_ids=document_id or [],
            uris=[as_uri(u) for u in uri or []],
            sources=[as_uri(s) for s in source or []],
            modified_after=after,  # type: ignore[arg-type]
            modified_before=before,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        cli.fail(f"invalid filter: {exc.errors()[0]['msg']}", 2)
    narrowing = filters if filters.model_dump(exclude_defaults=True) else None
    remote = cli.remote(user)
    if remote:
        body: dict[str, Any] = {"query": query, "collection": collection, "k": k, "mode": mode}
        if narrowing is not None:
            body["filters"] = narrowing.model_dump(mode="json")
        citations = remote.post("/api/v1/search", body)["citations"]
    else:
        container = cli.local()
        try:
            hits, _ = container.rag.search_and_audit(
                query,
                cli.principal(user),
                collection,
                k,
                narrowing.to_filter() if narrowing else None,
                check_mode(mode),
            )
        except ApplianceError as exc:
            cli.fail(exc.message)
        finally:
            container.close()
        citations = citation_dicts(hits)
    cli.emit({"citations": citations}, as_json, citations_text(citations) or "no results")


def as_uri(value: str) -> str:
    """Local paths become the file:// URIs documents are stored under; URIs pass unchanged."""
    return value if "://" in value else Path(value).expanduser().resolve().as_uri()
