"""API keys: random, shown once, stored as SHA-256 (they carry 256 bits of entropy, so a slow
password hash adds nothing), checked in constant time. A key belongs to a user, carries a role no
higher than that user's, and may be scoped to collections and route prefixes and expire.

``resolve_principal`` turns a bearer token into the Principal the request acts as, reading the
user's role, state and groups from the DB each time so changes apply to the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, select, update

from appliance.db import api_keys, now
from appliance.domain import InvalidRequest, NotFound, Principal, Role, Unauthenticated
from appliance.security.identity import ROLE_RANK, ROLES, IdentityStore, lower_role, validate_role
from appliance.security.secrets import secrets_dir

KEY_PREFIX = "kb-"
__all__ = [
    "ADMIN_KEY_FILE",
    "KEY_PREFIX",
    "ROLES",
    "IssuedKey",
    "KeyStore",
    "bootstrap_admin_to_file",
    "is_limited_key",
    "issue_key",
    "resolve_key_session",
    "resolve_principal",
]


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything is stored in UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class IssuedKey:
    key: str
    user: str
    role: Role
    id: int | None = None
    collections: tuple[str, ...] | None = None
    routes: tuple[str, ...] | None = None
    expires_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.key,
            "user": self.user,
            "role": self.role,
            "collections": list(self.collections) if self.collections is not None else None,
            "routes": list(self.routes) if self.routes is not None else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


class KeyStore:
    def __init__(self, engine: Engine, fixed_admin_key: str | None = None) -> None:
        self.engine = engine
        self._fixed_admin = _hash(fixed_admin_key) if fixed_admin_key else None
        self._ephemeral: dict[str, Principal] = {}

    def create(
        self,
        user: str,
        role: Role,
        collections: Sequence[str] | None = None,
        routes: Sequence[str] | None = None,
        expires_days: float | None = None,
    ) -> IssuedKey:
        validate_role(role)
        for prefix in routes or ():
            if not prefix.startswith("/"):
                raise InvalidRequest(f"route scope {prefix!r} must be a path prefix starting with '/'")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        expires = now() + timedelta(days=expires_days) if expires_days else None
        cols = tuple(collections) if collections else None
        rts = tuple(routes) if routes else None
        with self.engine.begin() as conn:
            inserted = conn.execute(
                insert(api_keys).values(
                    prefix=key[:10],
                    key_hash=_hash(key),
                    user=user,
                    role=role,
                    created_at=now(),
                    collections=list(cols) if cols else None,
                    routes=list(rts) if rts else None,
                    expires_at=expires,
                )
            ).inserted_primary_key
        assert inserted is not None
        return IssuedKey(key, user, role, int(inserted[0]), cols, rts, expires)

    def add_ephemeral(self, principal: Principal) -> str:
        """A key valid for this process's lifetime only (the local CLI's token)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        self._ephemeral[_hash(key)] = principal
        return key

    def has_admin(self) -> bool:
        if self._fixed_admin:
            return True
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys.c.id).where(api_keys.c.role == "admin", api_keys.c.revoked_at.is_(None))
            ).first()
        return row is not None

    def bootstrap_admin(self) -> IssuedKey | None:
        """On first start, create the admin user and its key and return the key (to print once)."""
        IdentityStore(self.engine).ensure_user("admin", "admin")
        if self.has_admin():
            return None
        return self.create("admin", "admin")

    def authenticate(self, key: str | None) -> Principal | None:
        """The key's owner, role, id and scopes (no groups: see ``resolve_principal``), or None for
        an unknown, revoked or expired key."""
        if not key:
            return None
        digest = _hash(key)
        if self._fixed_admin and hmac.compare_digest(digest, self._fixed_admin):
            return Principal("admin", "admin")
        for known, principal in self._ephemeral.items():
            if hmac.compare_digest(digest, known):
                return principal
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys).where(api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None))
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return _active(row)

    def by_id(self, key_id: int) -> Principal | None:
        """Like ``authenticate`` for a key already checked once: a UI session signed in with a key
        keeps only its id, and asks again on every request whether it was revoked or expired."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            ).first()
        return None if row is None else _active(row)

    def list(self, user: str | None = None) -> list[dict[str, Any]]:
        query = select(api_keys).order_by(api_keys.c.id)
        if user is not None:
            query = query.where(api_keys.c.user == user)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        current = now()
        out = []
        for r in rows:
            expires, revoked = _utc(r.expires_at), _utc(r.revoked_at)
            out.append(
                {
                    "id": r.id,
                    "prefix": r.prefix,
                    "user": r.user,
                    "role": r.role,
                    "collections": r.collections,
                    "routes": r.routes,
                    "created_at": _utc(r.created_at).isoformat(),  # type: ignore[union-attr]
                    "expires_at": expires.isoformat() if expires else None,
                    "revoked_at": revoked.isoformat() if revoked else None,
                    "active": revoked is None and (expires is None or expires > current),
                }
            )
        return out

    def revoke(self, key_id: int, owner: str | None = None) -> dict[str, Any]:
        """Revoke one key. With ``owner``, another user's key is indistinguishable from a missing one."""
        with self.engine.begin() as conn:
            query = select(api_keys.c.id, api_keys.c.user).where(api_keys.c.id == key_id)
            row = conn.execute(query).first()
            if row is None or (owner is not None and row.user != owner):
                raise NotFound(f"no key {key_id}")
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now())
            )
        return next(k for k in self.list(row.user) if k["id"] == key_id)

    def revoke_user(self, user: str) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.user == user, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now())
                ).rowcount
            )


def _active(row: Any) -> Principal | None:
    expires = _utc(row.expires_at)
    if expires is not None and expires <= now():
        return None
    return Principal(
        row.user,
        row.role,
        key_id=row.id,
        collections=tuple(row.collections) if row.collections else None,
        routes=tuple(row.routes) if row.routes else None,
    )


def resolve_principal(keys: KeyStore, identity: IdentityStore, token: str | None) -> Principal:
    """The principal a bearer token acts as, with the user's current role and ALL its groups.

    Raises Unauthenticated for a missing, unknown, revoked or expired key and for a key whose user
    was disabled or deleted."""
    if not token:
        raise Unauthenticated("missing API key: send 'Authorization: Bearer <key>'")
    principal = keys.authenticate(token)
    if principal is None:
        raise Unauthenticated("invalid, expired or revoked API key")
    if principal.key_id is None:
        return principal  # the configured admin key and the local CLI's token
    return _as_user(identity, principal)


def resolve_key_session(identity: IdentityStore, keys: KeyStore, key_id: int, user: str) -> Principal:
    """The principal a UI session signed in with key ``key_id`` acts as now: the key's scopes and
    role cap, the user's current role and groups. Raises Unauthenticated once the key is revoked or
    expired, or its user disabled, deleted or not ``user``."""
    principal = keys.by_id(key_id)
    if principal is None or principal.name != user:
        raise Unauthenticated("the API key this session signed in with was revoked or has expired")
    return _as_user(identity, principal, require_user=True)


def _as_user(identity: IdentityStore, principal: Principal, require_user: bool = False) -> Principal:
    """A key's principal with its user's current state: disabled refuses, a lowered role lowers the
    key, and ALL the user's groups."""
    found = identity.lookup(principal.name)
    if found is None and require_user:
        raise Unauthenticated(f"no user {principal.name!r}")
    if found is None:
        # A key made with KeyStore.create for a name that is not a user (scripts and tests from
        # before users existed): it acts with its own role and no groups.
        return principal
    user_role, disabled = found
    if disabled:
        raise Unauthenticated(f"user {principal.name!r} is disabled")
    role = lower_role(principal.role, user_role) if user_role in ROLE_RANK else principal.role
    return Principal(
        principal.name,
        role,
        identity.resolve_groups(principal.name),
        key_id=principal.key_id,
        collections=principal.collections,
        routes=principal.routes,
    )


ADMIN_KEY_FILE = "admin.key"


def bootstrap_admin_to_file(keys: KeyStore, data_dir: Path) -> tuple[IssuedKey, Path] | None:
    """On first start, create the admin key and also keep it in ``<data dir>/secrets/admin.key``
    (0600), so it is not only in a terminal's or a log collector's scrollback. None when an admin
    key exists already."""
    issued = keys.bootstrap_admin()
    if issued is None:
        return None
    path = secrets_dir(data_dir) / ADMIN_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an earlier install keeps its mode otherwise
    with os.fdopen(fd, "w") as fh:
        fh.write(issued.key + "\n")
    return issued, path


def is_limited_key(principal: Principal, stored_role: str | None) -> bool:
    """Does the caller act through a key narrower than its user (scoped to collections or routes,
    or carrying a lower role)? Such a key manages no other key of its owner: it could otherwise
    revoke the owner's keys or list them to pick a wider one."""
    if principal.key_id is None:
        return False
    if principal.collections is not None or principal.routes is not None:
        return True
    return stored_role is not None and ROLE_RANK.get(principal.role, -1) < ROLE_RANK.get(stored_role, -1)


def issue_key(
    keys: KeyStore,
    identity: IdentityStore,
    user: str,
    role: str | None = None,
    collections: Sequence[str] | None = None,
    routes: Sequence[str] | None = None,
    expires_days: float | None = None,
) -> IssuedKey:
    """A key for an existing, enabled user, with at most that user's role (default: the same)."""
    found = identity.lookup(user)
    if found is None:
        raise NotFound(f"no user {user!r}; create it with `appliance users add`")
    user_role, disabled = found
    if disabled:
        raise InvalidRequest(f"user {user!r} is disabled")
    role = validate_role(role or user_role)
    if ROLE_RANK[role] > ROLE_RANK[user_role]:
        raise InvalidRequest(f"a key of {user!r} (role {user_role}) cannot carry the {role} role")
    return keys.create(user, role, collections, routes, expires_days)
