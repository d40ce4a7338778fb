"""Users, groups and API keys."""

from __future__ import annotations

from pydantic import BaseModel, Field

from appliance.api.schemas.common import Paged
from appliance.domain import Role


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    role: Role = "employee"
    groups: list[str] = Field(default_factory=list, description="Groups the user is a direct member of.")
    password: str | None = Field(None, min_length=8, description="UI password (argon2-hashed at rest).")


class UserUpdate(BaseModel):
    role: Role | None = None
    disabled: bool | None = None
    password: str | None = Field(None, min_length=8)
    current_password: str | None = Field(
        None,
        description="Needed with `password` unless an admin (with a key not scoped to collections) "
        "sets another user's password. A change ends the user's other UI sessions.",
    )


class User(BaseModel):
    name: str
    role: Role
    disabled: bool
    has_password: bool
    groups: list[str] = Field(description="Direct memberships.")
    all_groups: list[str] = Field(description="Every group, nested ones resolved.")
    created_at: str | None


class UserList(Paged):
    data: list[User]


class GroupCreate(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    parent: str | None = Field(None, description="Group (department) this one belongs to.")


class MemberAdd(BaseModel):
    member: str
    kind: str = Field("user", pattern="^(user|group)$")


class Group(BaseModel):
    name: str
    parents: list[str]
    users: list[str]
    groups: list[str]


class GroupList(Paged):
    data: list[Group]


class KeyCreate(BaseModel):
    user: str
    role: Role | None = Field(None, description="Default: the user's role; never higher.")
    collections: list[str] | None = Field(None, description="Collections the key may query; default all.")
    routes: list[str] | None = Field(None, description="Path prefixes the key may call; default all.")
    expires_days: float | None = Field(None, gt=0)


class Key(BaseModel):
    id: int
    prefix: str
    user: str
    role: Role
    collections: list[str] | None
    routes: list[str] | None
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    active: bool


class IssuedKey(BaseModel):
    id: int
    key: str = Field(description="Shown only in this response; stored as a hash.")
    user: str
    role: Role
    collections: list[str] | None
    routes: list[str] | None
    expires_at: str | None


class KeyList(Paged):
    data: list[Key]


class Me(BaseModel):
    name: str
    role: Role
    groups: list[str] = Field(description="Every group, nested ones resolved.")
    key_id: int | None
    collections: list[str] | None = Field(description="Collections the key may query; null: all.")
    routes: list[str] | None = Field(description="Path prefixes the key may call; null: all.")
