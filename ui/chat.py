"""The employees' chat: streamed answers with their sources, as the signed-in user."""

from __future__ import annotations

import re
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


def format_grounding(result: Any) -> str:
    """How far the sources back the answer, in one line under it."""
    if result is None or result.support is None:
        return ""
    note = " — the generated answer was replaced by quotes from the sources" if result.fallback else ""
    return f"\n\n_Support from the sources: {result.support:.0%}{note}._"


def history_messages(history: list[Any]) -> list[dict[str, str]]:
    """Gradio's history (message dicts, or [user, bot] pairs) as chat messages without the sources
    footer we appended to each answer."""
    out: list[dict[str, str]] = []
    for item in history or []:
        if isinstance(item, dict):
            pairs = [(item.get("role", ""), item.get("content"))]
        else:
            pairs = [("user", item[0]), ("assistant", item[1])]
        for role, content in pairs:
            if role in ("user", "assistant") and isinstance(content, str) and content.strip():
                out.append(
                    {"role": role, "content": re.split(r"\n\n(?:_Support from|\*\*Sources)", content)[0]}
                )
    return out


def build_chat(container: Any, sessions: dict[str, Principal]) -> gr.Blocks:
    async def respond(message: str, history: list[Any], request: gr.Request) -> AsyncIterator[str]:
        principal = sessions.get(request.username or "")
        if principal is None:
            yield "Your session has expired; reload the page and sign in again."
            return
        answer = ""
        citations: list[dict[str, Any]] = []
        result = None
        try:
            container.metering.check_quota(principal)
            async for event in container.rag.ask_stream(
                message, principal, history=history_messages(history)
            ):
                if event["type"] == "citations":
                    citations = event["citations"]
                elif event["type"] == "delta":
                    answer += event["content"]
                    yield answer
                elif event["type"] == "done":
                    result = event["result"]
        except ApplianceError as exc:
            yield f"{answer}\n\n⚠️ {exc.message}"
            return
        yield answer + format_grounding(result) + format_sources(citations)

    with gr.Blocks(title="Knowledge base", analytics_enabled=False) as blocks:
        gr.ChatInterface(
            respond,
            title="Knowledge base",
            description="Answers come from your organisation's documents, with their sources.",
            analytics_enabled=False,
            flagging_mode="never",
        )
    return blocks
