"""``POST /v1/embeddings``: the appliance's embedder in the OpenAI format. Inputs are bounded in
count and length (the request body is capped before this runs, see ``api/limits.py``), quotas
apply, and the tokens embedded are metered like a question's."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter

from appliance.api.deps import EmbedderDep, MeteringDep, MetricsDep, PrincipalDep
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.api.schemas.embeddings import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from appliance.domain import InvalidRequest, NotFound

router = APIRouter(prefix="/v1", tags=["openai"], responses={**COMMON_ERRORS, **error_responses(400, 404)})

MAX_INPUTS = 2048  # OpenAI's own limit per request
# OpenAI's per-input limit is 8192 tokens; the embedder reads far fewer, so longer texts are only
# tokenizer work (and memory) for an answer that would ignore most of them.
MAX_INPUT_CHARS = 32_000


@router.post(
    "/embeddings", response_model=EmbeddingResponse, summary="Embed texts with the appliance's model"
)
async def embeddings(
    req: EmbeddingRequest,
    embedder: EmbedderDep,
    metrics: MetricsDep,
    metering: MeteringDep,
    principal: PrincipalDep,
) -> EmbeddingResponse:
    if req.model not in (None, "", "default", embedder.name):
        raise NotFound(
            f"embedding model {req.model!r} is not served here; this appliance serves {embedder.name!r}"
        )
    texts = [req.input] if isinstance(req.input, str) else req.input
    if not texts:
        raise InvalidRequest("input must hold at least one text")
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(f"at most {MAX_INPUTS} inputs per request")
    if any(not isinstance(t, str) or not t for t in texts):
        raise InvalidRequest("every input must be a non-empty string")
    if any(len(t) > MAX_INPUT_CHARS for t in texts):
        raise InvalidRequest(f"every input must be at most {MAX_INPUT_CHARS} characters")
    await asyncio.to_thread(metering.check_quota, principal)

    def run() -> tuple[np.ndarray, int]:
        embedder.start()
        return embedder.embed_documents(texts), sum(embedder.count_tokens(t) for t in texts)

    vectors, tokens = await asyncio.to_thread(run)
    await asyncio.to_thread(metering.record_usage, principal, tokens)
    metrics.embedded_texts.labels(embedder.name).inc(len(texts))
    data = [
        EmbeddingData(
            index=i,
            embedding=base64.b64encode(v.astype(np.float32).tobytes()).decode()
            if req.encoding_format == "base64"
            else v.astype(float).tolist(),
        )
        for i, v in enumerate(vectors)
    ]
    return EmbeddingResponse(
        data=data, model=embedder.name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
