"""API keys: random, shown once, stored as SHA-256 (they carry 256 bits of entropy, so a slow
password hash adds nothing), checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select, update

from appliance.db import api_keys, now
from appliance.domain import InvalidRequest, Principal, Role

KEY_PREFIX = "kb-"
ROLES: tuple[Role, ...] = ("admin", "curator", "employee", "app")


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    key: str
    user: str
    role: Role


class KeyStore:
    def __init__(self, engine: Engine, fixed_admin_key: str | None = None) -> None:
        self.engine = engine
        self._fixed_admin = _hash(fixed_admin_key) if fixed_admin_key else None
        self._ephemeral: dict[str, Principal] = {}

    def create(self, user: str, role: Role) -> IssuedKey:
        if role not in ROLES:
            raise InvalidRequest(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(api_keys).values(
                    prefix=key[:10], key_hash=_hash(key), user=user, role=role, created_at=now()
                )
            )
        return IssuedKey(key, user, role)

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
        """On first start, create the admin key and return it (to print once); later, None."""
        if self.has_admin():
            return None
        return self.create("admin", "admin")

    def authenticate(self, key: str | None) -> Principal | None:
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
                select(api_keys.c.user, api_keys.c.role, api_keys.c.key_hash).where(
                    api_keys.c.key_hash == digest, api_keys.c.revoked_at.is_(None)
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return Principal(row.user, row.role)

    def revoke_user(self, user: str) -> int:
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.user == user, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now())
                ).rowcount
            )
