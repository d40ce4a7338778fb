"""``appliance ask``: an answer from the knowledge base with its citations, streamed to stdout."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

from appliance.commands.context import AppContext
from appliance.commands.options import CollectionOpt, JsonOpt, UserOpt
from appliance.commands.output import citations_text
from appliance.domain import ApplianceError


def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="The question.")],
    collection: CollectionOpt = None,
    user: UserOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a question from the knowledge base, with citations."""
    cli = AppContext.of(ctx)
    remote = cli.remote(user)
    if remote:
        result = remote.post("/api/v1/ask", {"question": question, "collection": collection})
        if not as_json:
            typer.echo(result["answer"])
    else:
        container = cli.local()

        async def run() -> dict[str, Any]:
            out: dict[str, Any] = {}
            principal = cli.principal(user)
            async for event in container.rag.ask_stream(question, principal, collection=collection):
                if event["type"] == "delta" and not as_json:
                    sys.stdout.write(event["content"])
                    sys.stdout.flush()
                elif event["type"] == "done":
                    out = event["result"].as_dict()
            if not as_json:
                sys.stdout.write("\n")
            return out

        try:
            result = asyncio.run(run())
        except ApplianceError as exc:
            cli.fail(exc.message)
        finally:
            container.close()
    if as_json:
        cli.emit(result, True, "")
    else:
        t = result["timings"]
        typer.echo(
            f"\n{citations_text(result['citations'])}\n"
            f"retrieval {t['retrieval_ms']:.0f} ms, first token {t['ttft_ms']:.0f} ms, total {t['total_ms']:.0f} ms",
            err=True,
        )
