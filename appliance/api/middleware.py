"""Security middleware shared by every router: audit of admin actions and auth failures, and the
UI session cookie and CSRF hardening that Gradio's built-in login lacks.

- Every non-GET request under /api/v1 by an authenticated principal is audited (method, path,
  status, plus whatever the route put in ``request.state.audit``: never secrets), so routers
  added later are covered without code of their own; questions and searches
  (the metered routes) are audited in more detail by the RAG pipeline instead.
- Every 401 and 403 from any route is audited as ``auth.denied``, within the bounds of
  ``DeniedAudit`` (per client address and in total; the records left out are counted).
- Gradio 6 sets its login cookie ``access-token-<id>`` with SameSite=None (and a non-Secure
  ``access-token-unsecure-<id>`` twin) and answers any origin's POST. We rewrite both cookies to
  SameSite=Strict (Secure, and without the twin, when ``auth.secure_cookies``, when the request
  came over TLS, or through a proxy in ``auth.trusted_proxies`` saying X-Forwarded-Proto https) and refuse
  state-changing UI requests whose Origin is neither this host nor in ``auth.trusted_origins``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from appliance.api.errors import error_body
from appliance.audit import AuditEvent, AuditLog
from appliance.domain import Principal
from appliance.security.throttle import DeniedAudit, storage_uri
from appliance.settings import Settings

log = logging.getLogger(__name__)

_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# Paths served by the REST API rather than the UI; they authenticate with bearer keys, which a
# browser never sends cross-site on its own, so the Origin check is for the UI only.
_API_PREFIXES = ("/api/", "/v1/", "/docs", "/redoc", "/openapi.json", "/healthz", "/readyz", "/metrics")


def install_security(app: FastAPI, settings: Settings, audit: AuditLog) -> None:
    trusted = {o.rstrip("/") for o in settings.auth.trusted_origins}
    proxies = [ipaddress.ip_network(p, strict=False) for p in settings.auth.trusted_proxies]
    # Shared with the UI's sign-in (ui/app.py), so both kinds of refusal count against one bound.
    denied = app.state.denied_audit = DeniedAudit(
        audit,
        settings.auth.denied_audit_per_client,
        settings.auth.denied_audit_total,
        storage_uri(settings),
    )

    @app.middleware("http")
    async def security(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path
        is_api = path.startswith(_API_PREFIXES)
        if not is_api and request.method not in _SAFE and not _same_origin(request, trusted):
            response: Response = JSONResponse(
                error_body("forbidden", "cross-origin request refused"), status_code=403
            )
        else:
            response = await call_next(request)
        principal = getattr(request.state, "principal", None)
        status = response.status_code
        try:
            # Gradio polls login_check before sign-in; that 401 is a question, not a failed attempt.
            if status in (401, 403) and not path.endswith("/login_check"):
                await asyncio.to_thread(_audit_denied, denied, request, principal, status)
            elif (
                principal is not None
                and request.method not in _SAFE
                and path.startswith("/api/v1/")
                and not any(path.startswith(p) for p in settings.quotas.metered_routes)
            ):
                details = getattr(request.state, "audit", None) or {}
                event = AuditEvent(
                    principal.name,
                    f"{request.method} {_route_template(request)}",
                    path,
                    {"status": status, "key_id": principal.key_id, **details},
                )
                await asyncio.to_thread(audit.append, event)
        except Exception:  # an audit write failing must not turn a done action into a 500
            log.exception("could not write the audit record for %s %s", request.method, path)
        if not is_api:
            _harden_cookies(response, settings.auth.secure_cookies or _over_tls(request, proxies))
        return response


def _audit_denied(denied: DeniedAudit, request: Request, principal: Principal | None, status: int) -> None:
    denied.record(
        principal.name if principal is not None else "anonymous",
        request.url.path,
        request.client.host if request.client else None,
        {
            "method": request.method,
            "status": status,
            "key_id": principal.key_id if principal is not None else None,
        },
    )


def _route_template(request: Request) -> str:
    path: str = getattr(request.scope.get("route"), "path", request.url.path)
    return path


def _same_origin(request: Request, trusted: set[str]) -> bool:
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # not a browser cross-site request: browsers send Origin on cross-site POSTs
    parts = urlsplit(origin)
    if f"{parts.scheme}://{parts.netloc}" in trusted:
        return True
    return parts.netloc == request.headers.get("host", "")


def _over_tls(request: Request, proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    """Did the browser reach us over TLS: directly, or through a trusted proxy that says so in
    X-Forwarded-Proto (its first value: the hop nearest the browser)? Anyone else's header is
    ignored, or a client could ask for a cookie its own plain connection then leaks."""
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if forwarded != "https" or not proxies or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    return any(peer in net for net in proxies)


def _harden_cookies(response: Response, secure: bool) -> None:
    cookies = response.headers.getlist("set-cookie")
    if not any(c.startswith("access-token") for c in cookies):
        return
    del response.headers["set-cookie"]
    for cookie in cookies:
        if cookie.startswith("access-token"):
            if secure and cookie.startswith("access-token-unsecure"):
                continue
            attrs = [a for a in cookie.split(";") if not a.strip().lower().startswith(("samesite", "secure"))]
            attrs.append(" SameSite=Strict")
            if secure:
                attrs.append(" Secure")
            if not any(a.strip().lower() == "httponly" for a in attrs):
                attrs.append(" HttpOnly")
            cookie = ";".join(attrs)
        response.headers.append("set-cookie", cookie)
