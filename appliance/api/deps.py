"""Request-scoped dependencies: the services (from app.state) and who is asking.

``get_principal`` resolves the caller from the DB on every request (role, disabled state, ALL
groups), so a membership or ACL change applies to the next query. It also enforces API-key scopes
(route prefixes; collections named by any route; on metered routes, where no collection means the
default one, that one too) and, on metered routes, quotas (429 + Retry-After). Collections named
only in a path or by an object's id are checked by the services, which know them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import Depends, Request

from appliance.domain import Forbidden, Principal
from appliance.security.acl import check_collection_scope, check_route_scope
from appliance.security.auth import resolve_principal
from appliance.security.identity import ROLE_RANK


def get_container(request: Request) -> Any:
    return request.app.state.container


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _requested_collections(request: Request, container: Any) -> list[str]:
    """Collections a request names: ``collection`` in the query, the JSON body or the form (an
    upload), or an OpenAI ``model`` that is a collection name. FastAPI has already read (and
    cached) the body or the form by the time dependencies run."""
    names: list[Any] = request.query_params.getlist("collection")
    ctype = request.headers.get("content-type", "").lower()
    if request.method in ("POST", "PUT", "PATCH"):
        if "json" in ctype:
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError:
                body = None  # the route answers 422
            if isinstance(body, dict):
                names.append(body.get("collection"))
                model = body.get("model")
                if isinstance(model, str) and model in container.store.collections():
                    names.append(model)
        elif ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            names += (await request.form()).getlist("collection")
    return [n for n in names if isinstance(n, str) and n]


async def get_principal(request: Request) -> Principal:
    container = request.app.state.container
    # DB lookups: off the event loop (this dependency is async only to read the cached body).
    principal = await asyncio.to_thread(
        resolve_principal, container.keys, container.identity, _bearer(request)
    )
    request.state.principal = principal
    check_route_scope(principal, request.url.path)
    metered = any(request.url.path.startswith(p) for p in container.settings.quotas.metered_routes)
    if principal.collections is not None:
        named = await _requested_collections(request, container)
        # A question naming no collection asks the default one; elsewhere naming none means "all I
        # may see" (lists) or the service picks the default and checks it itself.
        check_collection_scope(
            principal,
            named or ([None] if metered else []),
            container.settings.rag.default_collection,
        )
    if metered:
        await asyncio.to_thread(container.metering.check_quota, principal)
    return principal


def require_role(minimum: str) -> Any:
    """A dependency that lets through ``minimum`` and higher roles (admin > curator > employee > app)."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if ROLE_RANK.get(principal.role, -1) < ROLE_RANK[minimum]:
            raise Forbidden(f"this operation needs the {minimum} role")
        return principal

    check.__name__ = f"require_{minimum}"
    return check


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this operation needs the admin role")
    # Admin routes act on the whole appliance (users, keys, quotas, the audit log, every
    # collection's ledger): a key scoped to some collections must not reach them, or it could,
    # say, mint an unscoped key for itself.
    if principal.collections is not None:
        raise Forbidden("this operation needs an admin key that is not scoped to collections")
    return principal


ContainerDep = Annotated[Any, Depends(get_container)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
CuratorDep = Annotated[Principal, Depends(require_role("curator"))]
