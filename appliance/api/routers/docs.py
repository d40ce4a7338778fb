"""The API documentation (/docs, /redoc, /openapi.json), served as ``server.docs`` says: `public`
(FastAPI's own routes, for development), `auth` (only to a caller signed in with a key or the UI),
or `off`. The route list tells an attacker where to aim, so by default it is not public."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from appliance.api.deps import SignedInDep

OPENAPI_URL = "/openapi.json"


def fastapi_docs_urls(mode: str) -> dict[str, Any]:
    """The ``FastAPI(...)`` arguments: its own public routes only when ``mode`` is `public`."""
    if mode == "public":
        return {}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}


def docs_router(app: FastAPI, mode: str) -> APIRouter | None:
    """The signed-in documentation routes for ``auth``; None otherwise (FastAPI's or nothing)."""
    if mode != "auth":
        return None
    router = APIRouter(include_in_schema=False)

    @router.get(OPENAPI_URL)
    def openapi(_: SignedInDep) -> JSONResponse:
        return JSONResponse(app.openapi())

    @router.get("/docs")
    def swagger(_: SignedInDep) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{app.title} - API")

    @router.get("/redoc")
    def redoc(_: SignedInDep) -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_URL, title=f"{app.title} - API")

    return router
