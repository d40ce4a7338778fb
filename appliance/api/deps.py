"""Request-scoped dependencies: the services (from app.state) and who is asking."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from appliance.domain import Forbidden, Principal, Unauthenticated


def get_container(request: Request) -> Any:
    return request.app.state.container


def get_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    principal = request.app.state.container.keys.authenticate(token.strip())
    if principal is None:
        raise Unauthenticated("invalid or revoked API key")
    return principal  # type: ignore[no-any-return]


def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this operation needs the admin role")
    return principal


ContainerDep = Annotated[Any, Depends(get_container)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
