"""POST /api/v1/eval (administrators): `appliance eval` over REST, so the console can run the
golden sets and gate on a baseline."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from appliance.api.deps import AdminDep, SearchDep, SettingsDep, get_rag
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.api.schemas.evaluation import EvalRequest, EvalResponse
from appliance.domain import NotFound
from appliance.evaluation import load_qa, parse_qa, run
from appliance.rag.pipeline import citation_dicts

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
    eval_dir = settings.data_dir / "eval"
    if req.set is not None:
        path = eval_dir / "sets" / f"{req.set}.jsonl"
        if not path.is_file():
            raise NotFound(f"no eval set {req.set!r} (sets are <data dir>/eval/sets/<set>.jsonl)")
        items = await asyncio.to_thread(load_qa, path)
    else:
        items = parse_qa([it.model_dump() for it in req.items or []])
    collection = req.collection or settings.rag.default_collection
    loop = asyncio.get_running_loop()
    # Only when answering: retrieval alone needs no chat model (nor its pool).
    rag = get_rag(request) if req.generate else None

    # Runs in a worker thread (retrieval and embedding are blocking); answers go back to the loop.
    def judge(question: str, k: int) -> list[dict[str, Any]]:
        hits, _ = search.search(question, principal, collection, k, None, req.mode)
        return citation_dicts(hits)

    def ask(question: str) -> tuple[str, list[dict[str, Any]]]:
        assert rag is not None
        answer = asyncio.run_coroutine_threadsafe(rag.ask(question, principal, collection=collection), loop)
        result = answer.result()
        return result.answer, result.citations

    return await asyncio.to_thread(
        run,
        items,
        judge,
        req.k,
        ask if req.generate else None,
        req.mode,
        req.name or req.set or "inline",
        eval_dir,
        req.baseline,
        "inline",
        req.max_drop,
    )
