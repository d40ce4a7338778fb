from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from appliance.api.deps import ReadyDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: models loaded and the store open")
def readyz(ready: ReadyDep) -> JSONResponse:
    return JSONResponse({"status": "ready" if ready else "starting"}, status_code=200 if ready else 503)
