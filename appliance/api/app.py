"""``create_app(container)``: the REST API and the UI in one ASGI app. Nothing is built at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from appliance.api.errors import error_body, install_error_handlers
from appliance.api.middleware import install_security
from appliance.api.routers import (
    ask,
    collections,
    conversations,
    embeddings,
    health,
    identity,
    kb,
    metrics,
    openai,
    originals,
    usage,
)
from appliance.api.routers import ingestion as ingestion_routes
from appliance.api.routers.docs import docs_router, fastapi_docs_urls
from appliance.audit import keep_retention
from appliance.container import Container

log = logging.getLogger(__name__)


def create_app(
    container: Container, mount_ui: Callable[[FastAPI, Container], object] | None = None
) -> FastAPI:
    """``mount_ui`` (``ui.app.mount_ui`` in production) is passed in so the core never imports ui/."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load the heavy parts before the first request instead of during it.
        container.store  # noqa: B018 - opens the shard (and takes the data-dir lock)
        container.embedder.start()
        container.pool.start()
        container.jobs.start_scheduler()
        days = container.settings.audit.retention_days
        retention = asyncio.create_task(keep_retention(container.audit, days)) if days else None
        container.ready = True
        try:
            yield
        finally:
            container.ready = False
            if retention:
                retention.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await retention
            container.close()

    app = FastAPI(
        title="Knowledge-base appliance",
        version="0.1.0",
        description="On-premises RAG over your documents. OpenAI-compatible chat under /v1, "
        "knowledge-base management under /api/v1. Authenticate with `Authorization: Bearer <key>`.",
        lifespan=lifespan,
        **fastapi_docs_urls(container.settings.server.docs),
    )
    app.state.container = container
    container.ready = False
    install_error_handlers(app)
    limit = int(container.settings.server.max_request_mb * 2**20)

    @app.middleware("http")
    async def body_limit(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            return JSONResponse(
                error_body("payload_too_large", f"request body over {limit // 2**20} MiB"), status_code=413
            )
        return await call_next(request)

    install_security(app, container.settings, container.audit)

    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(kb.router)
    app.include_router(ask.router)
    app.include_router(conversations.router)
    app.include_router(collections.router)
    app.include_router(embeddings.router)
    app.include_router(metrics.router)
    app.include_router(identity.router)
    app.include_router(usage.router)
    app.include_router(ingestion_routes.router)
    app.include_router(originals.router)
    docs = docs_router(app, container.settings.server.docs)
    if docs is not None:
        app.include_router(docs)
    if mount_ui is not None:
        mount_ui(app, container)
    return app
