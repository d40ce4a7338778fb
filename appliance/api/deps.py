"""Request-scoped dependencies: one per service (from the container in ``app.state``), and who is
asking. Routers declare the services they use (``RagDep``, ``JobsDep`` ...), never the container.

``get_principal`` resolves the caller from the DB on every request (role, disabled state, ALL
groups), so a membership or ACL change applies to the next query. It also enforces API-key scopes
(route prefixes; collections named by any route; on metered routes, where no collection means the
default one, that one too) and, on metered routes, quotas (429 + Retry-After). Collections named
only in a path or by an object's id are checked by the services, which know them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from appliance.audit import AuditLog
from appliance.collections import CollectionService
from appliance.container import Container
from appliance.domain import Forbidden, Principal, Unauthenticated
from appliance.embeddings.base import Embedder
from appliance.inference.pool import InferencePool
from appliance.ingestion.originals import Originals
from appliance.ingestion.service import IngestionJobs
from appliance.metering import Metering
from appliance.observability import Metrics
from appliance.rag.conversations import ConversationStore
from appliance.rag.modes import split_mode
from appliance.rag.pipeline import RagService
from appliance.rag.search import SearchService
from appliance.security.acl import check_collection_scope, check_route_scope
from appliance.security.auth import KeyStore, resolve_principal
from appliance.security.identity import ROLE_RANK, IdentityStore
from appliance.settings import Settings
from appliance.vectorstore.base import VectorStore

# -- services ------------------------------------------------------------------------------------


def _container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


def get_settings(request: Request) -> Settings:
    return _container(request).settings


def get_store(request: Request) -> VectorStore:
    return _container(request).store


def get_embedder(request: Request) -> Embedder:
    return _container(request).embedder


def get_pool(request: Request) -> InferencePool:
    return _container(request).pool


def get_rag(request: Request) -> RagService:
    return _container(request).rag


def get_search(request: Request) -> SearchService:
    return _container(request).search


def get_jobs(request: Request) -> IngestionJobs:
    return _container(request).jobs


def get_identity(request: Request) -> IdentityStore:
    return _container(request).identity


def get_keys(request: Request) -> KeyStore:
    return _container(request).keys


def get_metering(request: Request) -> Metering:
    return _container(request).metering


def get_audit(request: Request) -> AuditLog:
    return _container(request).audit


def get_collections(request: Request) -> CollectionService:
    return _container(request).collections


def get_conversations(request: Request) -> ConversationStore:
    return _container(request).conversations


def get_metrics(request: Request) -> Metrics:
    return _container(request).metrics


def get_originals(request: Request) -> Originals:
    return _container(request).originals


def get_ready(request: Request) -> dict[str, Any]:
    """The readiness report (appliance/readiness.py), or "starting" before start-up is done."""
    container = _container(request)
    if not container.ready:
        return {"status": "starting", "checks": {}}
    return container.readiness.check()


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[VectorStore, Depends(get_store)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]
RagDep = Annotated[RagService, Depends(get_rag)]
SearchDep = Annotated[SearchService, Depends(get_search)]
JobsDep = Annotated[IngestionJobs, Depends(get_jobs)]
IdentityDep = Annotated[IdentityStore, Depends(get_identity)]
KeysDep = Annotated[KeyStore, Depends(get_keys)]
MeteringDep = Annotated[Metering, Depends(get_metering)]
AuditDep = Annotated[AuditLog, Depends(get_audit)]
CollectionsDep = Annotated[CollectionService, Depends(get_collections)]
ConversationsDep = Annotated[ConversationStore, Depends(get_conversations)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
OriginalsDep = Annotated[Originals, Depends(get_originals)]
ReadyDep = Annotated[dict[str, Any], Depends(get_ready)]


# -- who is asking -------------------------------------------------------------------------------


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def model_collection(
    request: Request, model: str, collections: CollectionService, principal: Principal
) -> str | None:
    """The collection ``model`` names, also as ``<collection>:<answer mode>``, when this principal
    may know of it (an OpenAI client asking a knowledge base), else None: a collection it may not
    see is an unknown model, like a name that does not exist. Looked up once per request: the
    scope check and the chat route both need it, and must agree."""
    memo: dict[str, str | None] | None = getattr(request.state, "model_collections", None)
    if memo is None:
        memo = request.state.model_collections = {}
    if model not in memo:
        base, _ = split_mode(model)
        for name in (model, base):
            if collections.visible(principal, name):
                memo[model] = name
                break
        else:
            memo[model] = None
    return memo[model]


async def _requested_collections(request: Request, container: Container, principal: Principal) -> list[str]:
    """Collections a request names: ``collection`` in the query, the JSON body or the form (an
    upload), or an OpenAI ``model`` that is a collection name. FastAPI has already read (and
    cached) the body or the form by the time dependencies run."""
    names: list[object] = list(request.query_params.getlist("collection"))
    ctype = request.headers.get("content-type", "").lower()
    if request.method in ("POST", "PUT", "PATCH"):
        # FastAPI parses a body with no content type as JSON too.
        if not ctype or "json" in ctype:
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError:
                body = None  # the route answers 422
            if isinstance(body, dict):
                names.append(body.get("collection"))
                model = body.get("model")
                if isinstance(model, str):
                    names.append(model_collection(request, model, container.collections, principal))
        elif ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            names += (await request.form()).getlist("collection")
    return [n for n in names if isinstance(n, str) and n]


async def get_principal(request: Request) -> Principal:
    container = _container(request)
    # DB lookups: off the event loop (this dependency is async only to read the cached body).
    principal = await asyncio.to_thread(
        resolve_principal, container.keys, container.identity, _bearer(request)
    )
    request.state.principal = principal
    check_route_scope(principal, request.url.path)
    metered = any(request.url.path.startswith(p) for p in container.settings.quotas.metered_routes)
    if principal.collections is not None:
        named = await _requested_collections(request, container, principal)
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


async def signed_in(request: Request) -> Principal:
    """A Bearer key's principal, or the signed-in UI session's (``app.state.ui_session``, set when
    the UI is mounted): for what a browser opens without a key (a document's original from the
    chat's links, the API documentation). The cookie is SameSite=Strict, so another site cannot
    make a signed-in browser fetch these."""
    if request.headers.get("authorization"):
        return await get_principal(request)  # a bad key is a 401, not a fall back to the cookie
    resolve = getattr(request.app.state, "ui_session", None)
    principal = await asyncio.to_thread(resolve, request) if resolve is not None else None
    if principal is None:
        raise Unauthenticated("sign in to the UI, or send 'Authorization: Bearer <key>'")
    request.state.principal = principal
    check_route_scope(principal, request.url.path)
    return principal  # type: ignore[no-any-return]


def require_role(minimum: str) -> Callable[[Principal], Principal]:
    """A dependency that lets through ``minimum`` and higher roles (admin > curator > employee > app)."""

    def check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if ROLE_RANK.get(principal.role, -1) < ROLE_RANK[minimum]:
            raise Forbidden(f"this operation needs the {minimum} role")
        return principal

    check.__name__ = f"require_{minimum}"
    return check


def _admin_refusal(principal: Principal) -> str | None:
    """Why this principal may not use admin-only power, or None when it may: the one rule behind
    ``AdminDep`` and ``AdminViewDep``."""
    if not principal.is_admin:
        return "this operation needs the admin role"
    # Admin routes act on the whole appliance (users, keys, quotas, the audit log, every
    # collection's ledger): a key scoped to some collections must not reach them, or it could,
    # say, mint an unscoped key for itself.
    if principal.collections is not None:
        return "this operation needs an admin key that is not scoped to collections"
    return None


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    refusal = _admin_refusal(principal)
    if refusal is not None:
        raise Forbidden(refusal)
    return principal


def admin_view(principal: Annotated[Principal, Depends(get_principal)]) -> Principal | None:
    """For routes that show an admin everything and anyone else their own things (users, keys,
    usage): the caller when it has admin power by the rule of ``require_admin``, else None. A key
    scoped to collections is then an ordinary user of its own account."""
    return principal if _admin_refusal(principal) is None else None


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
AdminViewDep = Annotated[Principal | None, Depends(admin_view)]
SignedInDep = Annotated[Principal, Depends(signed_in)]
CuratorDep = Annotated[Principal, Depends(require_role("curator"))]
