"""POST /api/v1/ask: a cited answer, optionally streamed, as a turn of a conversation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from appliance.api.deps import ConversationsDep, PrincipalDep, RagDep
from appliance.api.disconnect import unless_disconnected
from appliance.api.schemas.ask import AskRequest, AskResponse
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.domain import ApplianceError

router = APIRouter(prefix="/api/v1", tags=["knowledge base"], responses=COMMON_ERRORS)


async def _result(events: AsyncIterator[dict[str, Any]]) -> Any:
    async for event in events:
        if event["type"] == "done":
            return event["result"]
    raise AssertionError("the answer stream ended without its result")


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
async def ask(
    req: AskRequest,
    request: Request,
    rag: RagDep,
    conversations: ConversationsDep,
    principal: PrincipalDep,
) -> Any:
    conversation_id = req.conversation_id
    if conversation_id is None:
        conversation_id = conversations.create(principal.name, "", req.collection)["id"]
    events = rag.ask_stream(
        req.question,
        principal,
        collection=req.collection,
        k=req.k,
        conversation_id=conversation_id,
        mode=req.answer_mode,
    )
    if not req.stream:
        # Cancelled when the client hangs up, which frees the model slot (see unless_disconnected).
        result = await unless_disconnected(request, _result(events))
        return AskResponse(**result.as_dict())
    # Errors (404; 429 when the model's queue is full or too slow) before the 200 is sent: the
    # first event comes only once the model's slot is ours (RagService.ask_stream).
    first = await unless_disconnected(request, anext(events))

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
        finally:
            await events.aclose()  # a disconnect ends the answer (and frees its slot) now, not at GC

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
