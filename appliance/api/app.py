"""``create_app(container)``: the REST API and the UI in one ASGI app. Nothing is built at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from fastapi import FastAPI, Request

from appliance.api.deps import _bearer
from appliance.api.errors import install_error_handlers
from appliance.api.limits import BodyLimits, RequestBounds
from appliance.api.middleware import install_security
from appliance.api.routers import (
    ask,
    collections,
    conversations,
    embeddings,
    evaluation,
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
from appliance.domain import Principal
from appliance.security.auth import resolve_principal

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
    server = container.settings.server

    def authenticate(request: Request) -> Principal:
        # What get_principal resolves (a Bearer key), or the UI sign-in cookie the originals
        # route accepts; mount_ui sets ``ui_session`` after this app is built.
        token = _bearer(request)
        session = getattr(app.state, "ui_session", None)
        if token is None and session is not None and (principal := session(request)) is not None:
            return cast(Principal, principal)
        return resolve_principal(container.keys, container.identity, token)

    limits = BodyLimits(
        upload=int(container.settings.ingestion.max_file_mb * 2**20),
        api=int(server.max_json_mb * 2**20),
        ui=int(server.max_request_mb * 2**20),
    )
    # Added before install_security, so it runs inside it: its 401s are audited as auth.denied.
    app.add_middleware(RequestBounds, limits=limits, authenticate=authenticate)

    install_security(app, container.settings, container.audit)

    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(kb.router)
    app.include_router(evaluation.router)
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
