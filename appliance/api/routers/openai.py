"""OpenAI-compatible chat, answered from the knowledge base."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from appliance.api.deps import ContainerDep, PrincipalDep
from appliance.api.schemas.kb import citation_models
from appliance.api.schemas.openai import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ModelCard,
    ModelList,
    Usage,
)
from appliance.domain import ApplianceError, InvalidRequest
from appliance.inference.base import GenerationParams

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", response_model=ModelList, summary="Served models and knowledge bases")
def list_models(container: ContainerDep, _: PrincipalDep) -> ModelList:
    names = list(container.pool.backends)
    names += [c for c in container.store.collections() if c not in names]
    return ModelList(data=[ModelCard(id=n) for n in names])


def _resolve(
    container: Any, req: ChatCompletionRequest
) -> tuple[str | None, str | None, GenerationParams, str]:
    question = next((m.text() for m in reversed(req.messages) if m.role == "user"), "").strip()
    if not question:
        raise InvalidRequest("messages must contain a user message with text")
    model: str | None = None
    collection: str | None = None
    if req.model and req.model in container.pool.backends:
        model = req.model
    elif req.model and req.model in container.store.collections():
        collection = req.model
    elif req.model and req.model not in ("default", ""):
        raise InvalidRequest(f"unknown model {req.model!r}; GET /v1/models lists what is served")
    defaults = container.rag.defaults
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    params = GenerationParams(
        max_tokens=req.max_completion_tokens or req.max_tokens or defaults.max_tokens,
        temperature=defaults.temperature if req.temperature is None else req.temperature,
        top_p=req.top_p or defaults.top_p,
        stop=stop,
    )
    return model, collection, params, question


@router.post(
    "/chat/completions", response_model=ChatCompletionResponse, summary="Chat over the knowledge base"
)
async def chat_completions(
    req: ChatCompletionRequest, container: ContainerDep, principal: PrincipalDep
) -> Any:
    model, collection, params, question = _resolve(container, req)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    events = container.rag.ask_stream(question, principal, collection=collection, params=params, model=model)
    served = container.pool.backend(model).name

    if not req.stream:
        result = None
        async for event in events:
            if event["type"] == "done":
                result = event["result"]
        assert result is not None
        usage = Usage(**result.usage, total_tokens=sum(result.usage.values()))
        return ChatCompletionResponse(
            id=completion_id,
            created=created,
            model=result.model,
            choices=[ChatChoice(message={"role": "assistant", "content": result.answer})],
            usage=usage,
            citations=citation_models(result.citations),
        )

    # Fail before the 200 is sent when we can (queue full, bad collection): take the first event now.
    first = await anext(events)

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
                    u = event["result"].usage
                    usage = {**u, "total_tokens": sum(u.values())}
                    yield chunk({}, "stop", usage=usage, citations=event["result"].citations)
        except ApplianceError as exc:
            yield f"data: {json.dumps({'error': {'code': exc.code, 'message': exc.message}})}\n\n".encode()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
