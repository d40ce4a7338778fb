"""POST /api/v1/eval (administrators): `appliance eval` over REST, so the console can run the
golden sets and gate on a baseline."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from appliance.api.deps import AdminDep, SearchDep, SettingsDep, get_rag
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.api.schemas.evaluation import EvalRequest, EvalResponse
from appliance.evaluation import parse_qa
from appliance.evaluation_runs import run_eval, stored_set

router = APIRouter(prefix="/api/v1", tags=["knowledge base"], responses=COMMON_ERRORS)


@router.post(
    "/eval",
    response_model=EvalResponse,
    summary="Judge retrieval (and answers) on a golden set; gate on a baseline",
    responses=error_responses(400, 403, 404, 429, 503),
)
async def evaluate(
    req: EvalRequest, request: Request, search: SearchDep, settings: SettingsDep, principal: AdminDep
) -> Any:
    """200 whether or not the gate passes: ``gate.passed`` is the verdict. Named sets live in
    ``<data dir>/eval/sets/<set>.jsonl``; the report is written to ``<data dir>/eval``."""
    if req.set is not None:
        items = await asyncio.to_thread(stored_set, settings.data_dir, req.set)
    else:
        items = parse_qa([it.model_dump() for it in req.items or []])
    return await run_eval(
        search,
        get_rag(request) if req.generate else None,  # retrieval alone needs no chat model
        principal,
        settings.data_dir,
        items,
        req.name or req.set or "inline",
        req.collection or settings.rag.default_collection,
        req.k,
        req.mode,
        req.generate,
        req.baseline,
        req.max_drop,
    )
