from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from appliance.api.deps import ReadyDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: the store, an inference replica, the DB and Redis (when set) answer now",
)
def readyz(report: ReadyDep) -> JSONResponse:
    # A sync route: FastAPI runs it in its thread pool, so slow checks never block the event loop.
    return JSONResponse(report, status_code=200 if report["status"] == "ready" else 503)
