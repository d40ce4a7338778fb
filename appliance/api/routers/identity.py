"""Users, groups and API keys. Admin only (an admin key scoped to collections is no admin here:
``AdminDep``/``AdminViewDep``), except that every user may read themselves (`/me`,
`/users/{own name}`), change their own password given the current one, and list and revoke their
own keys (another user's key id answers 404; a limited key sees and revokes only itself)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from appliance.api.deps import AdminDep, AdminViewDep, IdentityDep, KeysDep, PrincipalDep
from appliance.api.schemas.common import COMMON_ERRORS, Limit, Offset, error_responses, page
from appliance.api.schemas.identity import (
    Group,
    GroupCreate,
    GroupList,
    IssuedKey,
    Key,
    KeyCreate,
    KeyList,
    Me,
    MemberAdd,
    User,
    UserCreate,
    UserList,
    UserUpdate,
)
from appliance.domain import Forbidden, NotFound, Principal
from appliance.security.auth import is_limited_key, issue_key
from appliance.security.identity import IdentityStore

router = APIRouter(
    prefix="/api/v1", tags=["identity"], responses={**COMMON_ERRORS, **error_responses(400, 403, 404, 409)}
)


# -- users ---------------------------------------------------------------------------------------


@router.get("/users", response_model=UserList, summary="List users")
def list_users(identity: IdentityDep, _: AdminDep, limit: Limit = 100, offset: Offset = 0) -> Any:
    got = page(identity.list_users(), limit, offset)
    return UserList(data=got.pop("page"), **got)


@router.post("/users", response_model=User, status_code=201, summary="Create a user")
def create_user(req: UserCreate, request: Request, identity: IdentityDep, _: AdminDep) -> Any:
    request.state.audit = {"user": req.name, "role": req.role, "groups": req.groups}
    return identity.add_user(req.name, req.role, req.groups, req.password)


@router.get("/me", response_model=Me, summary="Who the caller is: role, all groups, key scopes")
def me(principal: PrincipalDep) -> Any:
    return Me(
        name=principal.name,
        role=principal.role,
        groups=list(principal.groups),
        key_id=principal.key_id,
        collections=list(principal.collections) if principal.collections is not None else None,
        routes=list(principal.routes) if principal.routes is not None else None,
    )


def _own_or_404(admin: Principal | None, principal: Principal, name: str) -> None:
    # Non-admins (and admin keys scoped to collections) learn nothing about other users, not even
    # whether they exist.
    if admin is None and principal.name != name:
        raise NotFound(f"no user {name!r}")


@router.get("/users/{name}", response_model=User, summary="One user (non-admins: themselves only)")
def get_user(name: str, identity: IdentityDep, principal: PrincipalDep, admin: AdminViewDep) -> Any:
    _own_or_404(admin, principal, name)
    return identity.get_user(name)


@router.patch(
    "/users/{name}",
    response_model=User,
    summary="Change role, password or disable (non-admins: their own password only)",
)
def update_user(
    name: str,
    req: UserUpdate,
    request: Request,
    identity: IdentityDep,
    keys: KeysDep,
    principal: PrincipalDep,
    admin: AdminViewDep,
) -> Any:
    _own_or_404(admin, principal, name)
    request.state.audit = {
        "role": req.role,
        "disabled": req.disabled,
        "password_changed": req.password is not None,
    }
    if admin is None and (req.role is not None or req.disabled is not None):
        raise Forbidden("only an admin changes roles or disables users")
    # Whoever holds one of a user's keys, a limited one included, must not be able to turn it into
    # the user's full password session: only the current password changes it (or an admin, for
    # another user).
    own_change = req.password is not None and (admin is None or name == principal.name)
    if own_change and not (req.current_password and identity.check_password(name, req.current_password)):
        raise Forbidden("changing a password needs the current one (`current_password`)")
    user = identity.update_user(name, req.role, req.disabled, req.password)
    if req.disabled:
        keys.revoke_user(name)
    return user


@router.delete("/users/{name}", response_model=User, summary="Disable a user and revoke their keys")
def disable_user(name: str, identity: IdentityDep, keys: KeysDep, _: AdminDep) -> Any:
    user = identity.update_user(name, disabled=True)
    keys.revoke_user(name)
    return user


# -- groups --------------------------------------------------------------------------------------


@router.get("/groups", response_model=GroupList, summary="List groups")
def list_groups(identity: IdentityDep, _: AdminDep, limit: Limit = 100, offset: Offset = 0) -> Any:
    got = page(identity.list_groups(), limit, offset)
    return GroupList(data=got.pop("page"), **got)


@router.post("/groups", response_model=Group, status_code=201, summary="Create a group")
def create_group(req: GroupCreate, request: Request, identity: IdentityDep, _: AdminDep) -> Any:
    request.state.audit = {"group": req.name, "parent": req.parent}
    return identity.add_group(req.name, req.parent)


@router.get("/groups/{name}", response_model=Group, summary="One group")
def get_group(name: str, identity: IdentityDep, _: AdminDep) -> Any:
    return identity.get_group(name)


@router.delete("/groups/{name}", status_code=204, summary="Delete a group")
def delete_group(name: str, identity: IdentityDep, _: AdminDep) -> None:
    identity.delete_group(name)


@router.post("/groups/{name}/members", response_model=Group, summary="Add a user or a group")
def add_member(name: str, req: MemberAdd, request: Request, identity: IdentityDep, _: AdminDep) -> Any:
    request.state.audit = {"member": f"{req.kind}:{req.member}"}
    return identity.add_member(name, req.member, req.kind)


@router.delete("/groups/{name}/members/{kind}/{member}", response_model=Group, summary="Remove a member")
def remove_member(name: str, kind: str, member: str, identity: IdentityDep, _: AdminDep) -> Any:
    return identity.remove_member(name, member, kind)


# -- keys ----------------------------------------------------------------------------------------


def _limited(identity: IdentityStore, principal: Principal) -> bool:
    found = identity.lookup(principal.name)
    return is_limited_key(principal, found[0] if found else None)


@router.get("/keys", response_model=KeyList, summary="API keys (admins: all; others: their own)")
def list_keys(
    keys: KeysDep,
    identity: IdentityDep,
    principal: PrincipalDep,
    admin: AdminViewDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Any:
    found = keys.list(None if admin else principal.name)
    if admin is None and _limited(identity, principal):
        found = [k for k in found if k["id"] == principal.key_id]  # itself only
    got = page(found, limit, offset)
    return KeyList(data=got.pop("page"), **got)


@router.post("/keys", response_model=IssuedKey, status_code=201, summary="Create an API key (shown once)")
def create_key(req: KeyCreate, request: Request, identity: IdentityDep, keys: KeysDep, _: AdminDep) -> Any:
    issued = issue_key(keys, identity, req.user, req.role, req.collections, req.routes, req.expires_days)
    request.state.audit = {k: v for k, v in issued.as_dict().items() if k != "key"}
    return issued.as_dict()


@router.delete("/keys/{key_id}", response_model=Key, summary="Revoke an API key")
async def revoke_key(
    key_id: int, keys: KeysDep, identity: IdentityDep, principal: PrincipalDep, admin: AdminViewDep
) -> Any:
    owner = None if admin else principal.name
    if (
        admin is None
        and key_id != principal.key_id
        and await asyncio.to_thread(_limited, identity, principal)
    ):
        raise NotFound(f"no key {key_id}")  # as for another user's key
    return await asyncio.to_thread(keys.revoke, key_id, owner)
