"""The employees' chat: streamed answers with their sources, as the signed-in user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import gradio as gr

from appliance.domain import ApplianceError, Principal


def format_sources(citations: list[dict[str, Any]]) -> str:
    if not citations:
        return ""
    lines = ["", "", "**Sources**"]
    for c in citations:
        page = f", page {c['page']}" if c.get("page") else ""
        lines.append(f"{c['index']}. {c['title']}{page} — `{c['uri']}`")
    return "\n".join(lines)


def build_chat(container: Any, sessions: dict[str, Principal]) -> gr.Blocks:
    async def respond(message: str, history: list[Any], request: gr.Request) -> AsyncIterator[str]:
        principal = sessions.get(request.username or "")
        if principal is None:
            yield "Your session has expired; reload the page and sign in again."
            return
        answer = ""
        citations: list[dict[str, Any]] = []
        try:
            container.metering.check_quota(principal)
            async for event in container.rag.ask_stream(message, principal):
                if event["type"] == "citations":
                    citations = event["citations"]
                elif event["type"] == "delta":
                    answer += event["content"]
                    yield answer
        except ApplianceError as exc:
            yield f"{answer}\n\n⚠️ {exc.message}"
            return
        yield answer + format_sources(citations)

    with gr.Blocks(title="Knowledge base", analytics_enabled=False) as blocks:
        gr.ChatInterface(
            respond,
            title="Knowledge base",
            description="Answers come from your organisation's documents, with their sources.",
            analytics_enabled=False,
            flagging_mode="never",
        )
    return blocks
