"""Request bounds that hold before any route runs: a pure ASGI middleware, so no body byte is read
(and nothing is spooled to memory or disk) before the caller is known and the size is capped.

- A request to the REST API (``/api/``, ``/v1/``) that carries a body is authenticated first, by
  the resolver the route dependencies use (a Bearer key, or the UI's sign-in cookie); 401
  otherwise, before the body is read. Health probes carry no body and are never touched.
- Every body is capped per route class while it streams (chunked bodies included), and a
  ``Content-Length`` over the cap is refused before reading: uploads at ``ingestion.max_file_mb``
  (plus the multipart framing), the other API routes at ``server.max_json_mb``, the UI at
  ``server.max_request_mb``. The streamed cap is Starlette's ``RequestBodyLimitMiddleware``.

The route dependencies still resolve the principal again: scopes, roles and quotas stay theirs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from starlette.datastructures import Headers
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from appliance.api.errors import error_body
from appliance.domain import MAX_FILE_SETTING, Principal, Unauthenticated

API_PREFIXES = ("/api/", "/v1/")
UPLOAD_ROUTES = frozenset({("POST", "/api/v1/documents")})
# Room for the multipart boundary lines, part headers and the small form fields around the file.
MULTIPART_SLACK = 1 << 20

Authenticate = Callable[[Request], Principal]
"""Who a request acts as, from its headers and cookies only; raises Unauthenticated."""


@dataclass(frozen=True)
class BodyLimits:
    """Largest body in bytes per route class, and the setting that names each (for the 413 text)."""

    upload: int
    api: int
    ui: int

    def for_request(self, method: str, path: str) -> tuple[int, str]:
        if (method, path.rstrip("/")) in UPLOAD_ROUTES:
            return self.upload + MULTIPART_SLACK, MAX_FILE_SETTING
        if path.startswith(API_PREFIXES):
            return self.api, "server.max_json_mb"
        return self.ui, "server.max_request_mb"


class RequestBounds:
    """The middleware; ``authenticate`` runs in a worker thread (it reads the metadata DB)."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, authenticate: Authenticate) -> None:
        self.app = app
        self.limits = limits
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, setting = self.limits.for_request(scope["method"], scope["path"])
        declared = headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            message = f"request body over the {limit / 2**20:g} MiB limit ({setting})"
            await JSONResponse(error_body("payload_too_large", message), status_code=413)(
                scope, receive, send
            )
            return
        has_body = "transfer-encoding" in headers or (declared or "0").strip() not in ("", "0")
        if has_body and scope["path"].startswith(API_PREFIXES):
            try:
                await asyncio.to_thread(self.authenticate, Request(scope))
            except Unauthenticated as exc:
                response = JSONResponse(
                    error_body(exc.code, exc.message), status_code=401, headers={"WWW-Authenticate": "Bearer"}
                )
                await response(scope, receive, send)
                return
        await RequestBodyLimitMiddleware(self.app, limit)(scope, receive, send)
