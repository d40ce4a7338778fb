"""POST /api/v1/ask: a cited answer, optionally streamed, as a turn of a conversation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from appliance.api.deps import ContainerDep, PrincipalDep
from appliance.api.schemas.ask import AskRequest, AskResponse
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.domain import ApplianceError

router = APIRouter(prefix="/api/v1", tags=["knowledge base"], responses=COMMON_ERRORS)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@router.post(
    "/ask",
    response_model=AskResponse,
    summary="Answer a question with citations",
    responses={
        **error_responses(400, 404, 429, 503),
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or events when `stream`"},
    },
)
async def ask(req: AskRequest, container: ContainerDep, principal: PrincipalDep) -> Any:
    conversation_id = req.conversation_id
    if conversation_id is None:
        conversation_id = container.conversations.create(principal.name, "", req.collection)["id"]
    events = container.rag.ask_stream(
        req.question,
        principal,
        collection=req.collection,
        k=req.k,
        conversation_id=conversation_id,
        mode=req.answer_mode,
    )
    if not req.stream:
        async for event in events:
            if event["type"] == "done":
                return AskResponse(**event["result"].as_dict())
    first = await anext(events)  # errors (404, 429) before the 200 is sent

    async def stream() -> AsyncIterator[bytes]:
        yield _sse("citations", {"id": first["id"], "citations": first["citations"]})
        try:
            async for event in events:
                if event["type"] == "delta":
                    yield _sse("delta", {"content": event["content"]})
                elif event["type"] == "done":
                    yield _sse("done", AskResponse(**event["result"].as_dict()).model_dump())
        except ApplianceError as exc:
            yield _sse("error", {"error": {"code": exc.code, "message": exc.message}})

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
