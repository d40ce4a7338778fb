"""Users, nested groups (departments) and roles, stored in the metadata DB.

A group may contain users and other groups; a user's groups are every group reachable upwards
from its direct memberships, resolved on each request so a membership change applies to the next
query. Adding a group into one of its own descendants is refused (it would make a cycle).
Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, insert, select, update

from appliance.db import group_members, groups, now, users
from appliance.domain import Conflict, InvalidRequest, NotFound, Principal, Role

ROLES: tuple[Role, ...] = ("admin", "curator", "employee", "app")
# Higher may do everything lower may; a key never carries more than its user's role.
ROLE_RANK: dict[str, int] = {"app": 0, "employee": 1, "curator": 2, "admin": 3}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
MIN_PASSWORD = 8

_hasher = PasswordHasher()
# Verifying against this when the user does not exist keeps the timing of "no such user" and
# "wrong password" alike.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


def validate_name(name: str, what: str = "name") -> str:
    if not _NAME.match(name or ""):
        raise InvalidRequest(
            f"invalid {what} {name!r}: 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    return name


def validate_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidRequest(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    return role  # type: ignore[return-value]


def lower_role(a: str, b: str) -> Role:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b  # type: ignore[return-value]


class IdentityStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- users ------------------------------------------------------------------------------------

    def add_user(
        self, name: str, role: str, groups_: Iterable[str] = (), password: str | None = None
    ) -> dict[str, Any]:
        validate_name(name, "user name")
        validate_role(role)
        wanted = list(dict.fromkeys(groups_))
        pw_hash = self._hash_password(password) if password is not None else None
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first():
                raise Conflict(f"user {name!r} already exists")
            self._require_groups(conn, wanted)
            conn.execute(
                insert(users).values(
                    name=name, role=role, password_hash=pw_hash, disabled=False, created_at=now()
                )
            )
            for g in wanted:
                conn.execute(insert(group_members).values(group=g, member_kind="user", member=name))
        return self.get_user(name)

    def ensure_user(self, name: str, role: str) -> None:
        """Create the user if missing (the bootstrap admin); never changes an existing one."""
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first() is None:
                conn.execute(insert(users).values(name=name, role=role, disabled=False, created_at=now()))

    def get_user(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            direct = sorted(
                r.group
                for r in conn.execute(
                    select(group_members.c.group).where(
                        group_members.c.member_kind == "user", group_members.c.member == name
                    )
                )
            )
        return _user_dict(row, direct, self.resolve_groups(name))

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
            edges = conn.execute(
                select(group_members.c.group, group_members.c.member).where(
                    group_members.c.member_kind == "user"
                )
            ).all()
        direct: dict[str, list[str]] = {}
        for e in edges:
            direct.setdefault(e.member, []).append(e.group)
        parents = self._parents()
        return [
            _user_dict(r, sorted(direct.get(r.name, [])), _closure(direct.get(r.name, []), parents))
            for r in rows
        ]

    def update_user(
        self,
        name: str,
        role: str | None = None,
        disabled: bool | None = None,
        password: str | None = None,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if role is not None:
            values["role"] = validate_role(role)
        if disabled is not None:
            values["disabled"] = disabled
        if password is not None:
            values["password_hash"] = self._hash_password(password)
        with self.engine.begin() as conn:
            if conn.execute(select(users.c.name).where(users.c.name == name)).first() is None:
                raise NotFound(f"no user {name!r}")
            if values:
                conn.execute(update(users).where(users.c.name == name).values(**values))
        return self.get_user(name)

    def check_password(self, name: str, password: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(users.c.password_hash, users.c.disabled).where(users.c.name == name)
            ).first()
        stored = row.password_hash if row is not None and row.password_hash else None
        ok: bool
        try:
            ok = _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or stored is None or row is None or row.disabled:
            return False
        if _hasher.check_needs_rehash(stored):
            with self.engine.begin() as conn:
                conn.execute(
                    update(users).where(users.c.name == name).values(password_hash=_hasher.hash(password))
                )
        return True

    def password_stamp(self, name: str) -> str:
        """A short digest of the user's stored password hash ("" without a password): UI sessions
        remember it at sign-in and end once it changes, i.e. when the password is changed."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users.c.password_hash).where(users.c.name == name)).first()
        stored = row.password_hash if row is not None and row.password_hash else ""
        return hashlib.sha256(stored.encode("utf-8")).hexdigest()[:32]

    def principal(self, name: str) -> Principal:
        """The user as a principal with ALL its groups; NotFound for unknown, Forbidden-ish for disabled."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users.c.role, users.c.disabled).where(users.c.name == name)).first()
        if row is None:
            raise NotFound(f"no user {name!r}")
        if row.disabled:
            raise Disabled(f"user {name!r} is disabled")
        return Principal(name, row.role, self.resolve_groups(name))

    def lookup(self, name: str) -> tuple[str, bool] | None:
        """(role, disabled) of a user, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users.c.role, users.c.disabled).where(users.c.name == name)).first()
        return None if row is None else (row.role, bool(row.disabled))

    # -- groups -----------------------------------------------------------------------------------

    def add_group(self, name: str, parent: str | None = None) -> dict[str, Any]:
        validate_name(name, "group name")
        with self.engine.begin() as conn:
            if conn.execute(select(groups.c.name).where(groups.c.name == name)).first():
                raise Conflict(f"group {name!r} already exists")
            if parent is not None:
                self._require_groups(conn, [parent])
            conn.execute(insert(groups).values(name=name, created_at=now()))
            if parent is not None:
                conn.execute(insert(group_members).values(group=parent, member_kind="group", member=name))
        return self.get_group(name)

    def get_group(self, name: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            if conn.execute(select(groups.c.name).where(groups.c.name == name)).first() is None:
                raise NotFound(f"no group {name!r}")
            members = conn.execute(
                select(group_members.c.member_kind, group_members.c.member).where(
                    group_members.c.group == name
                )
            ).all()
            parents = conn.execute(
                select(group_members.c.group).where(
                    group_members.c.member_kind == "group", group_members.c.member == name
                )
            ).all()
        return {
            "name": name,
            "parents": sorted(p.group for p in parents),
            "users": sorted(m.member for m in members if m.member_kind == "user"),
            "groups": sorted(m.member for m in members if m.member_kind == "group"),
        }

    def list_groups(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            names = [r.name for r in conn.execute(select(groups.c.name).order_by(groups.c.name))]
        return [self.get_group(n) for n in names]

    def delete_group(self, name: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(groups.c.name).where(groups.c.name == name)).first() is None:
                raise NotFound(f"no group {name!r}")
            conn.execute(delete(group_members).where(group_members.c.group == name))
            conn.execute(
                delete(group_members).where(
                    group_members.c.member_kind == "group", group_members.c.member == name
                )
            )
            conn.execute(delete(groups).where(groups.c.name == name))

    def add_member(self, group: str, member: str, kind: str = "user") -> dict[str, Any]:
        if kind not in ("user", "group"):
            raise InvalidRequest("member kind must be 'user' or 'group'")
        with self.engine.begin() as conn:
            self._require_groups(conn, [group])
            if kind == "user":
                if conn.execute(select(users.c.name).where(users.c.name == member)).first() is None:
                    raise NotFound(f"no user {member!r}")
            else:
                self._require_groups(conn, [member])
                if member == group or member in _closure([group], self._parents(conn)):
                    raise Conflict(f"putting group {member!r} into {group!r} would make a cycle")
            exists = conn.execute(
                select(group_members.c.group).where(
                    group_members.c.group == group,
                    group_members.c.member_kind == kind,
                    group_members.c.member == member,
                )
            ).first()
            if exists is None:
                conn.execute(insert(group_members).values(group=group, member_kind=kind, member=member))
        return self.get_group(group)

    def remove_member(self, group: str, member: str, kind: str = "user") -> dict[str, Any]:
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(group_members).where(
                    group_members.c.group == group,
                    group_members.c.member_kind == kind,
                    group_members.c.member == member,
                )
            ).rowcount
        if not gone:
            raise NotFound(f"{kind} {member!r} is not a direct member of group {group!r}")
        return self.get_group(group)

    def resolve_groups(self, user: str) -> tuple[str, ...]:
        with self.engine.connect() as conn:
            direct = [
                r.group
                for r in conn.execute(
                    select(group_members.c.group).where(
                        group_members.c.member_kind == "user", group_members.c.member == user
                    )
                )
            ]
            if not direct:
                return ()
            return _closure(direct, self._parents(conn))

    # -- helpers ----------------------------------------------------------------------------------

    def _parents(self, conn: Any = None) -> dict[str, list[str]]:
        """group -> the groups that directly contain it."""
        query = select(group_members.c.group, group_members.c.member).where(
            group_members.c.member_kind == "group"
        )
        if conn is None:
            with self.engine.connect() as c:
                rows = c.execute(query).all()
        else:
            rows = conn.execute(query).all()
        out: dict[str, list[str]] = {}
        for r in rows:
            out.setdefault(r.member, []).append(r.group)
        return out

    @staticmethod
    def _require_groups(conn: Any, names: list[str]) -> None:
        if not names:
            return
        found = {r.name for r in conn.execute(select(groups.c.name).where(groups.c.name.in_(names)))}
        missing = [n for n in names if n not in found]
        if missing:
            raise NotFound(f"no group {missing[0]!r}; create it with `appliance groups add`")

    @staticmethod
    def _hash_password(password: str) -> str:
        if len(password) < MIN_PASSWORD:
            raise InvalidRequest(f"password too short: at least {MIN_PASSWORD} characters")
        return _hasher.hash(password)


class Disabled(NotFound):
    """A disabled user authenticates as nobody; the API turns this into 401."""


def _closure(start: Iterable[str], parents: dict[str, list[str]]) -> tuple[str, ...]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        g = todo.pop()
        if g in seen:
            continue  # tolerate a cycle written around the API instead of looping forever
        seen.add(g)
        todo.extend(parents.get(g, ()))
    return tuple(sorted(seen))


def _user_dict(row: Any, direct: list[str], all_groups: tuple[str, ...]) -> dict[str, Any]:
    return {
        "name": row.name,
        "role": row.role,
        "disabled": bool(row.disabled),
        "has_password": bool(row.password_hash),
        "groups": direct,
        "all_groups": list(all_groups),
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
