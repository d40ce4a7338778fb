"""Users, groups and API keys (admins only): create, disable, enable, reset a password, change a
role; create groups and add members; create keys (the key is shown once) and revoke them.

The same calls as the REST routes in ``appliance/api/routers/identity.py``, audited like them:
disabling a user revokes their keys, as ``DELETE /api/v1/users/{name}`` does. A revoked key's UI
session ends at its next request (``ui/app.py`` re-checks sessions on every request).
"""

from __future__ import annotations

import asyncio
from typing import Any

import gradio as gr

from appliance.domain import Principal
from appliance.security.auth import issue_key
from ui.admin.common import Console, esc, failed, notice, split_list

ROLES = ["employee", "curator", "admin", "app"]
USER_HEADERS = ["name", "role", "groups", "disabled", "password set", "created"]
GROUP_HEADERS = ["name", "parents", "users", "groups"]
KEY_HEADERS = ["id", "prefix", "user", "role", "collections", "routes", "expires", "revoked", "active"]


def user_rows(users: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            u["name"],
            u["role"],
            ", ".join(u["groups"]),
            u["disabled"],
            u["has_password"],
            (u["created_at"] or "")[:19],
        ]
        for u in users
    ]


def group_rows(groups: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [g["name"], ", ".join(g["parents"]), ", ".join(g["users"]), ", ".join(g["groups"])] for g in groups
    ]


def key_rows(keys: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            k["id"],
            k["prefix"],
            k["user"],
            k["role"],
            ", ".join(k["collections"] or []) or "all",
            ", ".join(k["routes"] or []) or "all",
            (k["expires_at"] or "")[:19],
            (k["revoked_at"] or "")[:19],
            k["active"],
        ]
        for k in keys
    ]


def build_identity(console: Console) -> dict[str, Any]:
    c = console.container
    status = gr.HTML(elem_id="kb-id-status")
    with gr.Tabs():
        with gr.Tab("Users"):
            users = gr.Dataframe(headers=USER_HEADERS, value=[], interactive=False, elem_id="kb-users-table")
            with gr.Row():
                u_name = gr.Textbox(label="User name", elem_id="kb-user-name")
                u_role = gr.Dropdown(ROLES, value="employee", label="Role", elem_id="kb-user-role")
                u_groups = gr.Textbox(label="Groups (comma-separated)", elem_id="kb-user-groups")
                u_password = gr.Textbox(label="Password", type="password", elem_id="kb-user-password")
            with gr.Row():
                create_user = gr.Button("Create user", variant="primary", elem_id="kb-user-create")
                set_role = gr.Button("Change role", elem_id="kb-user-set-role")
                reset_pw = gr.Button("Reset password", elem_id="kb-user-reset")
                enable = gr.Button("Enable", elem_id="kb-user-enable")
                disable = gr.Button("Disable (revokes keys)", variant="stop", elem_id="kb-user-disable")
        with gr.Tab("Groups"):
            groups = gr.Dataframe(
                headers=GROUP_HEADERS, value=[], interactive=False, elem_id="kb-groups-table"
            )
            with gr.Row():
                g_name = gr.Textbox(label="Group", elem_id="kb-group-name")
                g_parent = gr.Textbox(label="Parent group (optional)")
                create_group = gr.Button("Create group", variant="primary")
            with gr.Row():
                m_name = gr.Textbox(label="Member")
                m_kind = gr.Dropdown(["user", "group"], value="user", label="Member kind")
                add_member = gr.Button("Add to the group")
        with gr.Tab("API keys"):
            keys = gr.Dataframe(headers=KEY_HEADERS, value=[], interactive=False, elem_id="kb-keys-table")
            with gr.Row():
                k_user = gr.Textbox(label="For user", elem_id="kb-key-user")
                k_role = gr.Dropdown(["", *ROLES], value="", label="Role (empty: the user's)")
                k_colls = gr.Textbox(label="Only collections (comma-separated; empty: all)")
                k_routes = gr.Textbox(label="Only routes (prefixes; empty: all)")
                k_days = gr.Number(value=None, label="Expires in days (empty: never)")
                create_key = gr.Button("Create key", variant="primary", elem_id="kb-key-create")
            issued = gr.HTML(elem_id="kb-key-issued")
            with gr.Row():
                k_id = gr.Textbox(label="Key id", elem_id="kb-key-id")
                revoke = gr.Button("Revoke", variant="stop", elem_id="kb-key-revoke")

    def tables() -> list[Any]:
        return [
            user_rows(c.identity.list_users()),
            group_rows(c.identity.list_groups()),
            key_rows(c.keys.list()),
        ]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        if not principal.is_admin:
            return [gr.update()] * 3
        return await asyncio.to_thread(tables)

    async def run(
        request: gr.Request, action: str, target: str, call: Any, done: str, **data: Any
    ) -> list[Any]:
        try:
            await asyncio.to_thread(lambda: console.act(request, action, target, call, True, **data))
            return [*await asyncio.to_thread(tables), notice(done)]
        except Exception as exc:
            return [gr.update(), gr.update(), gr.update(), failed(exc)]

    async def on_create_user(name: str, role: str, grps: str, pw: str, request: gr.Request) -> list[Any]:
        wanted = split_list(grps)
        return await run(
            request,
            "POST /api/v1/users",
            "/api/v1/users",
            lambda p: c.identity.add_user(name.strip(), role, wanted, pw or None),
            f"User {name} created.",
            user=name,
            role=role,
            groups=wanted,
        )

    def patch(name: str, done: str, **change: Any) -> Any:
        async def handler(request: gr.Request) -> list[Any]:
            return await run(
                request,
                "PATCH /api/v1/users/{name}",
                f"/api/v1/users/{name}",
                lambda p: c.identity.update_user(name, **change),
                done,
                role=change.get("role"),
                disabled=change.get("disabled"),
                password_changed="password" in change,
            )

        return handler

    async def on_role(name: str, role: str, request: gr.Request) -> list[Any]:
        return await patch(name, f"{name} is now {role}.", role=role)(request)

    async def on_reset(name: str, pw: str, request: gr.Request) -> list[Any]:
        if not pw:
            return [gr.update()] * 3 + [notice("Type the new password first.", "error")]
        return await patch(name, f"Password of {name} reset.", password=pw)(request)

    async def on_enable(name: str, request: gr.Request) -> list[Any]:
        return await patch(name, f"{name} enabled.", disabled=False)(request)

    async def on_disable(name: str, request: gr.Request) -> list[Any]:
        def off(p: Principal) -> Any:
            user = c.identity.update_user(name, disabled=True)
            c.keys.revoke_user(name)
            return user

        return await run(
            request, "DELETE /api/v1/users/{name}", f"/api/v1/users/{name}", off, f"{name} disabled."
        )

    async def on_group(name: str, parent: str, request: gr.Request) -> list[Any]:
        return await run(
            request,
            "POST /api/v1/groups",
            "/api/v1/groups",
            lambda p: c.identity.add_group(name.strip(), parent.strip() or None),
            f"Group {name} created.",
            group=name,
            parent=parent or None,
        )

    async def on_member(group: str, member: str, kind: str, request: gr.Request) -> list[Any]:
        return await run(
            request,
            "POST /api/v1/groups/{name}/members",
            f"/api/v1/groups/{group}/members",
            lambda p: c.identity.add_member(group.strip(), member.strip(), kind),
            f"{kind} {member} added to {group}.",
            member=f"{kind}:{member}",
        )

    async def on_create_key(
        user: str, role: str, colls: str, routes: str, days: float | None, request: gr.Request
    ) -> list[Any]:
        got: dict[str, Any] = {}

        def create(p: Principal) -> Any:
            issued_key = issue_key(
                c.keys,
                c.identity,
                user.strip(),
                role or None,
                split_list(colls) or None,
                split_list(routes) or None,
                float(days) if days else None,
            )
            got.update(issued_key.as_dict())
            return issued_key

        out = await run(
            request, "POST /api/v1/keys", "/api/v1/keys", create, f"Key created for {user}.", user=user
        )
        if not got:
            return [*out, ""]
        shown = (
            "<p>Copy this key now: it is shown once and cannot be recovered.</p>"
            f'<div class="kb-key-once" id="kb-key-value">{esc(got["key"])}</div>'
            f"<p>Key id {esc(got['id'])} for {esc(got['user'])} ({esc(got['role'])}).</p>"
        )
        return [*out, shown]

    async def on_revoke(key_id: str, request: gr.Request) -> list[Any]:
        try:
            kid = int(str(key_id).strip())
        except ValueError:
            return [gr.update()] * 3 + [notice("Give the id of the key to revoke.", "error")]
        return await run(
            request,
            "DELETE /api/v1/keys/{key_id}",
            f"/api/v1/keys/{kid}",
            lambda p: c.keys.revoke(kid),
            f"Key {kid} revoked: its sessions end at their next request.",
        )

    async def on_user_select(evt: gr.SelectData) -> list[Any]:
        row = evt.row_value or []
        return [row[0], row[1]] if len(row) > 1 else [gr.update(), gr.update()]

    async def on_key_select(evt: gr.SelectData) -> Any:
        row = evt.row_value or []
        return str(row[0]) if row else gr.update()

    outs = [users, groups, keys, status]
    create_user.click(on_create_user, [u_name, u_role, u_groups, u_password], outs)
    set_role.click(on_role, [u_name, u_role], outs)
    reset_pw.click(on_reset, [u_name, u_password], outs)
    enable.click(on_enable, u_name, outs)
    disable.click(on_disable, u_name, outs)
    create_group.click(on_group, [g_name, g_parent], outs)
    add_member.click(on_member, [g_name, m_name, m_kind], outs)
    create_key.click(on_create_key, [k_user, k_role, k_colls, k_routes, k_days], [*outs, issued])
    revoke.click(on_revoke, k_id, outs)
    users.select(on_user_select, None, [u_name, u_role])
    keys.select(on_key_select, None, k_id)
    return {"refresh": refresh, "outputs": [users, groups, keys]}
