"""OpenAI-compatible chat, answered from the knowledge base."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from appliance.api.deps import (
    CollectionsDep,
    PoolDep,
    PrincipalDep,
    RagDep,
    model_collection,
)
from appliance.api.disconnect import unless_disconnected
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.api.schemas.openai import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
    Usage,
)
from appliance.collections import CollectionService
from appliance.domain import ApplianceError, InvalidRequest, Principal
from appliance.inference.base import GenerationParams
from appliance.inference.pool import InferencePool

router = APIRouter(prefix="/v1", tags=["openai"], responses=COMMON_ERRORS)


async def _result(events: AsyncIterator[dict[str, Any]]) -> Any:
    result = None
    async for event in events:
        if event["type"] == "done":
            result = event["result"]
    assert result is not None
    return result


@router.get("/models", response_model=ModelList, summary="Served models and knowledge bases")
def list_models(pool: PoolDep, collections: CollectionsDep, principal: PrincipalDep) -> ModelList:
    names = list(pool.backends)
    # Only the knowledge bases this caller may know of (as GET /api/v1/collections).
    names += [c for c in collections.visible_names(principal) if c not in names]
    return ModelList(data=[ModelCard(id=n) for n in names])


def _resolve(
    request: Request,
    req: ChatCompletionRequest,
    pool: InferencePool,
    collections: CollectionService,
    principal: Principal,
    defaults: GenerationParams,
) -> tuple[str | None, str | None, GenerationParams, str, list[dict[str, str]]]:
    last_user = next(
        (i for i in range(len(req.messages) - 1, -1, -1) if req.messages[i].role == "user"), None
    )
    question = req.messages[last_user].text().strip() if last_user is not None else ""
    if not question:
        raise InvalidRequest("messages must contain a user message with text")
    # Earlier user/assistant turns condense a follow-up; client system prompts are not passed on
    # (the appliance's own instructions keep the sources in their place).
    history = [
        {"role": m.role, "content": m.text()}
        for m in req.messages[:last_user]
        if m.role in ("user", "assistant") and m.text().strip()
    ]
    model: str | None = None
    collection: str | None = None
    if req.model and req.model in pool.backends:
        model = req.model
    elif req.model and model_collection(request, req.model, collections, principal):
        collection = req.model
    elif req.model and req.model not in ("default", ""):
        raise InvalidRequest(f"unknown model {req.model!r}; GET /v1/models lists what is served")
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    params = GenerationParams(
        max_tokens=req.max_completion_tokens or req.max_tokens or defaults.max_tokens,
        temperature=defaults.temperature if req.temperature is None else req.temperature,
        top_p=req.top_p or defaults.top_p,
        stop=stop,
    )
    return model, collection, params, question, history


def _usage(u: dict[str, int]) -> dict[str, int]:
    prompt, completion = u.get("prompt_tokens", 0), u.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.post(
    "/chat/completions",
    response_model=ChatCompletionResponse,
    summary="Chat over the knowledge base",
    description="OpenAI-compatible. `model` is a served model (GET /v1/models) or a collection name. "
    "The answer cites sources as [n]; the response carries `citations` (in a stream: on the first "
    "and the last chunk), `answer_id` for feedback, and the grounding `support` score. Earlier "
    "`messages` are used to understand a follow-up question.",
    responses={
        **error_responses(400, 404, 429, 503),
        200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE chunks when `stream`"},
    },
)
async def chat_completions(
    req: ChatCompletionRequest,
    request: Request,
    rag: RagDep,
    pool: PoolDep,
    collections: CollectionsDep,
    principal: PrincipalDep,
) -> Any:
    model, collection, params, question, history = _resolve(
        request, req, pool, collections, principal, rag.defaults
    )
    created = int(time.time())
    events = rag.ask_stream(
        question,
        principal,
        collection=collection,
        params=params,
        model=model,
        history=history or None,
        conversation_id=req.conversation_id,
        mode=req.answer_mode,
    )
    served = pool.backend(model).name

    if not req.stream:
        result = await unless_disconnected(request, _result(events))
        return ChatCompletionResponse(
            id=f"chatcmpl-{result.id}",
            created=created,
            model=result.model,
            choices=[ChatChoice(message={"role": "assistant", "content": result.answer})],
            usage=Usage(**_usage(result.usage)),
            citations=result.citations,
            answer_id=result.id,
            conversation_id=result.conversation_id,
            support=result.support,
            answer_mode=result.mode,
            fallback=result.fallback,
        )

    # Fail before the 200 is sent (queue full or too slow: 429; bad collection: 404): the first
    # event comes only once the model's slot is ours (RagService.ask_stream).
    first = await unless_disconnected(request, anext(events))
    completion_id = f"chatcmpl-{first['id']}"

    async def sse() -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            body = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": served,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

        yield chunk({"role": "assistant", "content": ""}, citations=first.get("citations", []))
        try:
            async for event in events:
                if event["type"] == "delta":
                    yield chunk({"content": event["content"]})
                elif event["type"] == "done":
                    r = event["result"]
                    yield chunk(
                        {},
                        "stop",
                        usage=_usage(r.usage),
                        citations=r.citations,
                        answer_id=r.id,
                        conversation_id=r.conversation_id,
                        support=r.support,
                        answer_mode=r.mode,
                        fallback=r.fallback,
                    )
        except ApplianceError as exc:
            yield f"data: {json.dumps({'error': {'code': exc.code, 'message': exc.message}})}\n\n".encode()
        finally:
            await events.aclose()  # a disconnect ends the answer (and frees its slot) now, not at GC
        yield b"data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
