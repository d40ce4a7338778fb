"""Who may read and do what: the principal's ACL tokens, the hash of the access filter each query
ran with (for the audit), API-key scopes (collections, route prefixes), reading one document's
ledger row, and curating a collection.

The filter itself is applied inside the vector query (``appliance.rag.pipeline.access_filter``)
from ``Principal.acl_tokens()``; this module only describes it and checks scopes. Everything here
is pure: callers bring the rows (``appliance.collections`` for owners, the ledger for ACLs).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from appliance.domain import EVERYONE, Forbidden, Principal
from appliance.security.identity import ROLE_RANK


def filter_tokens(principal: Principal) -> list[str] | None:
    """The ACL entries a query of this principal matches; None means unrestricted (admin)."""
    return None if principal.is_admin else sorted(set(principal.acl_tokens()))


def filter_hash(principal: Principal, collection: str | None) -> str:
    """SHA-256 over the effective access filter, so an audit reader can tell whether two queries
    ran with the same rights without the log listing every group."""
    body = {"collection": collection, "acl_any": filter_tokens(principal)}
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(raw).hexdigest()


def check_route_scope(principal: Principal, path: str) -> None:
    """A key scoped to route prefixes may call only paths under them."""
    if principal.routes is None:
        return
    if not any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in principal.routes):
        raise Forbidden(f"this API key may call only {', '.join(principal.routes)}")


def check_collection_scope(principal: Principal, collections: Iterable[str | None], default: str) -> None:
    """A key scoped to collections may query only those (no collection named: the default one)."""
    if principal.collections is None:
        return
    for name in collections:
        effective = name or default
        if effective not in principal.collections:
            raise Forbidden(f"this API key may not use collection {effective!r}")


def in_collection_scope(principal: Principal, collection: str) -> bool:
    return principal.collections is None or collection in principal.collections


def can_read(principal: Principal, collection: str, acl: Iterable[str] | None) -> bool:
    """May the principal read a document of ``collection`` stored with readers ``acl``? The same
    rule as the vector filter (an empty ACL means every signed-in user), plus the key's scope."""
    if not in_collection_scope(principal, collection):
        return False
    return principal.is_admin or bool(set(acl or (EVERYONE,)) & set(principal.acl_tokens()))


def is_curator(principal: Principal) -> bool:
    return ROLE_RANK.get(principal.role, -1) >= ROLE_RANK["curator"]


def can_curate(principal: Principal, owner_groups: Iterable[str], collection: str | None = None) -> bool:
    """Curators manage the sources and collections owned by one of their groups (ALL their groups,
    so a curator of a sub-department manages what its parent owns); admins all. With
    ``collection``, a key scoped away from it manages nothing there, whoever owns it."""
    if collection is not None and not in_collection_scope(principal, collection):
        return False
    if principal.is_admin:
        return True
    return principal.role == "curator" and bool(set(owner_groups) & set(principal.groups))
