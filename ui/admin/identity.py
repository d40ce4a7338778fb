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
from ui.admin.common import Console, esc, failed, notice, split_list, table, yes_no
from ui.i18n import stored_value, t, term, term_choices

ROLES = ["employee", "curator", "admin", "app"]
USER_HEADERS = ["c_h_name", "c_h_role", "c_h_groups", "c_h_disabled", "c_h_password_set", "c_h_created"]
GROUP_HEADERS = ["c_h_name", "c_h_parents", "c_h_users", "c_h_groups"]
KEY_HEADERS = [
    "c_h_id",
    "c_h_prefix",
    "c_h_user",
    "c_h_role",
    "c_h_collections",
    "c_h_routes",
    "c_h_expires",
    "c_h_revoked",
    "c_h_active",
]


def user_rows(users: list[dict[str, Any]], lang: str = "en") -> list[list[Any]]:
    return [
        [
            u["name"],
            term(lang, "c_role_", u["role"]),
            ", ".join(u["groups"]),
            yes_no(lang, u["disabled"]),
            yes_no(lang, u["has_password"]),
            (u["created_at"] or "")[:19],
        ]
        for u in users
    ]


def group_rows(groups: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [g["name"], ", ".join(g["parents"]), ", ".join(g["users"]), ", ".join(g["groups"])] for g in groups
    ]


def key_rows(keys: list[dict[str, Any]], lang: str = "en") -> list[list[Any]]:
    every = t(lang, "c_all")
    return [
        [
            k["id"],
            k["prefix"],
            k["user"],
            term(lang, "c_role_", k["role"]),
            ", ".join(k["collections"] or []) or every,
            ", ".join(k["routes"] or []) or every,
            (k["expires_at"] or "")[:19],
            (k["revoked_at"] or "")[:19],
            yes_no(lang, k["active"]),
        ]
        for k in keys
    ]


def build_identity(console: Console) -> dict[str, Any]:
    c = console.container
    tr = console.labels
    status = gr.HTML(elem_id="kb-id-status")
    with gr.Tabs():
        with tr(gr.Tab("Users", id="users"), label="c_users"):
            users = gr.Dataframe(headers=USER_HEADERS, value=[], interactive=False, elem_id="kb-users-table")
            with gr.Row():
                u_name = tr(gr.Textbox(label="User name", elem_id="kb-user-name"), label="c_user_name")
                u_role = tr(
                    gr.Dropdown(ROLES, value="employee", label="Role", elem_id="kb-user-role"),
                    label="c_h_role",
                    choices=term_choices("c_role_", ROLES),
                )
                u_groups = tr(gr.Textbox(label="Groups", elem_id="kb-user-groups"), label="c_user_groups")
                u_password = tr(
                    gr.Textbox(label="Password", type="password", elem_id="kb-user-password"),
                    label="c_password",
                )
            with gr.Row():
                create_user = tr(
                    gr.Button("Create user", variant="primary", elem_id="kb-user-create"),
                    value="c_create_user",
                )
                set_role = tr(gr.Button("Change role", elem_id="kb-user-set-role"), value="c_set_role")
                reset_pw = tr(gr.Button("Reset password", elem_id="kb-user-reset"), value="c_reset_password")
                enable = tr(gr.Button("Enable", elem_id="kb-user-enable"), value="c_enable")
                disable = tr(
                    gr.Button("Disable (revokes keys)", variant="stop", elem_id="kb-user-disable"),
                    value="c_disable",
                )
        with tr(gr.Tab("Groups", id="groups"), label="c_groups"):
            groups = gr.Dataframe(
                headers=GROUP_HEADERS, value=[], interactive=False, elem_id="kb-groups-table"
            )
            with gr.Row():
                g_name = tr(gr.Textbox(label="Group", elem_id="kb-group-name"), label="c_group")
                g_parent = tr(gr.Textbox(label="Parent group (optional)"), label="c_parent_group")
                create_group = tr(gr.Button("Create group", variant="primary"), value="c_create_group")
            with gr.Row():
                m_name = tr(gr.Textbox(label="Member"), label="c_member")
                m_kind = tr(
                    gr.Dropdown(["user", "group"], value="user", label="Member kind"), label="c_member_kind"
                )
                add_member = tr(gr.Button("Add to the group"), value="c_add_member")
        with tr(gr.Tab("API keys", id="keys"), label="c_keys"):
            keys = gr.Dataframe(headers=KEY_HEADERS, value=[], interactive=False, elem_id="kb-keys-table")
            with gr.Row():
                k_user = tr(gr.Textbox(label="For user", elem_id="kb-key-user"), label="c_key_user")
                k_role = tr(
                    gr.Dropdown(["", *ROLES], value="", label="Role (empty: the user's)"),
                    label="c_key_role",
                    choices=term_choices("c_role_", ["", *ROLES]),
                )
                k_colls = tr(gr.Textbox(label="Only collections"), label="c_key_collections")
                k_routes = tr(gr.Textbox(label="Only routes"), label="c_key_routes")
                k_days = tr(gr.Number(value=None, label="Expires in days (empty: never)"), label="c_key_days")
                create_key = tr(
                    gr.Button("Create key", variant="primary", elem_id="kb-key-create"), value="c_create_key"
                )
            issued = gr.HTML(elem_id="kb-key-issued")
            with gr.Row():
                k_id = tr(gr.Textbox(label="Key id", elem_id="kb-key-id"), label="c_key_id")
                revoke = tr(gr.Button("Revoke", variant="stop", elem_id="kb-key-revoke"), value="c_revoke")

    def tables(lang: str) -> list[Any]:
        return [
            table(lang, USER_HEADERS, user_rows(c.identity.list_users(), lang)),
            table(lang, GROUP_HEADERS, group_rows(c.identity.list_groups())),
            table(lang, KEY_HEADERS, key_rows(c.keys.list(), lang)),
        ]

    async def refresh(request: gr.Request) -> list[Any]:
        principal = console.curator(request)
        if not principal.is_admin:
            return [gr.update()] * 3
        return await asyncio.to_thread(tables, console.lang(request))

    async def run(
        request: gr.Request, action: str, target: str, call: Any, done: str, **data: Any
    ) -> list[Any]:
        lang = console.lang(request)
        try:
            await asyncio.to_thread(lambda: console.act(request, action, target, call, True, **data))
            return [*await asyncio.to_thread(tables, lang), notice(done)]
        except Exception as exc:
            return [gr.update(), gr.update(), gr.update(), failed(exc, lang)]

    async def on_create_user(name: str, role: str, grps: str, pw: str, request: gr.Request) -> list[Any]:
        wanted = split_list(grps)
        return await run(
            request,
            "POST /api/v1/users",
            "/api/v1/users",
            lambda p: c.identity.add_user(name.strip(), role, wanted, pw or None),
            console.t(request, "c_user_created", name=name),
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
        shown = term(console.lang(request), "c_role_", role)
        return await patch(name, console.t(request, "c_user_role", name=name, role=shown), role=role)(request)

    async def on_reset(name: str, pw: str, request: gr.Request) -> list[Any]:
        if not pw:
            return [gr.update()] * 3 + [notice(console.t(request, "c_type_password"), "error")]
        return await patch(name, console.t(request, "c_password_reset", name=name), password=pw)(request)

    async def on_enable(name: str, request: gr.Request) -> list[Any]:
        return await patch(name, console.t(request, "c_user_enabled", name=name), disabled=False)(request)

    async def on_disable(name: str, request: gr.Request) -> list[Any]:
        def off(p: Principal) -> Any:
            user = c.identity.update_user(name, disabled=True)
            c.keys.revoke_user(name)
            return user

        return await run(
            request,
            "DELETE /api/v1/users/{name}",
            f"/api/v1/users/{name}",
            off,
            console.t(request, "c_user_disabled", name=name),
        )

    async def on_group(name: str, parent: str, request: gr.Request) -> list[Any]:
        return await run(
            request,
            "POST /api/v1/groups",
            "/api/v1/groups",
            lambda p: c.identity.add_group(name.strip(), parent.strip() or None),
            console.t(request, "c_group_created", name=name),
            group=name,
            parent=parent or None,
        )

    async def on_member(group: str, member: str, kind: str, request: gr.Request) -> list[Any]:
        return await run(
            request,
            "POST /api/v1/groups/{name}/members",
            f"/api/v1/groups/{group}/members",
            lambda p: c.identity.add_member(group.strip(), member.strip(), kind),
            console.t(request, "c_member_added", kind=kind, member=member, group=group),
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
            request,
            "POST /api/v1/keys",
            "/api/v1/keys",
            create,
            console.t(request, "c_key_created", user=user),
            user=user,
        )
        if not got:
            return [*out, ""]
        role = term(console.lang(request), "c_role_", got["role"])
        shown = (
            f"<p>{esc(console.t(request, 'c_key_once'))}</p>"
            f'<div class="kb-key-once" id="kb-key-value">{esc(got["key"])}</div>'
            f"<p>{esc(console.t(request, 'c_key_about', id=got['id'], user=got['user'], role=role))}</p>"
        )
        return [*out, shown]

    async def on_revoke(key_id: str, request: gr.Request) -> list[Any]:
        try:
            kid = int(str(key_id).strip())
        except ValueError:
            return [gr.update()] * 3 + [notice(console.t(request, "c_key_id_needed"), "error")]
        return await run(
            request,
            "DELETE /api/v1/keys/{key_id}",
            f"/api/v1/keys/{kid}",
            lambda p: c.keys.revoke(kid),
            console.t(request, "c_key_revoked", id=kid),
        )

    async def on_user_select(evt: gr.SelectData) -> list[Any]:
        row = evt.row_value or []
        return (
            [row[0], stored_value("c_role_", row[1], ROLES)] if len(row) > 1 else [gr.update(), gr.update()]
        )

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
