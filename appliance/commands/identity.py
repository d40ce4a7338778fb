"""``appliance users|groups|keys``: who may use the appliance, in which groups, with which keys.

Like every administration command these work on the metadata DB directly (see
``appliance.commands.admin``), so they run beside a live ``appliance serve``.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

from appliance.audit import audit_admin
from appliance.commands.admin import actor, admin_change, admin_read
from appliance.commands.context import AppContext
from appliance.commands.options import JsonOpt


def users_group() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help="Users and their roles.")
    group.command("add")(users_add)
    group.command("list")(users_list)
    group.command("disable")(users_disable)
    group.command("enable")(users_enable)
    group.command("passwd")(users_passwd)
    group.command("role")(users_role)
    return group


def groups_group() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help="Groups (departments); groups may contain groups.")
    group.command("add")(groups_add)
    group.command("list")(groups_list)
    group.command("add-member")(groups_add_member)
    group.command("remove-member")(groups_remove_member)
    return group


def keys_group() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help="API keys.")
    group.command("create")(keys_create)
    group.command("list")(keys_list)
    group.command("revoke")(keys_revoke)
    return group


def _read_password(cli: AppContext) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            cli.fail("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


# -- users ---------------------------------------------------------------------------------------


def users_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    group: Annotated[list[str] | None, typer.Option("--group", "-g", help="Group (repeatable).")] = None,
    role: Annotated[str, typer.Option("--role", help="admin, curator, employee or app.")] = "employee",
    password_stdin: Annotated[
        bool,
        typer.Option("--password-stdin", help="Read the UI password from stdin (or prompt on a tty)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a user."""
    cli = AppContext.of(ctx)
    password = _read_password(cli) if password_stdin else None
    user = admin_change(
        cli,
        "users.add",
        name,
        lambda c: c.identity.add_user(name, role, group or [], password),
        role=role,
        groups=group or [],
    )
    cli.emit(user, as_json, f"user {name} ({role}) created; groups: {', '.join(user['groups']) or '-'}")


def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List users with their direct and resolved groups."""
    cli = AppContext.of(ctx)
    data = admin_read(cli, lambda c: c.identity.list_users())
    human = "\n".join(
        f"{u['name']:20} {u['role']:9} {'disabled' if u['disabled'] else 'active  '} "
        f"{', '.join(u['all_groups']) or '-'}"
        for u in data
    )
    cli.emit(data, as_json, human or "no users")


def users_disable(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False
) -> None:
    """Disable a user and revoke all their API keys."""
    cli = AppContext.of(ctx)

    def run(c: Any) -> Any:
        user = c.identity.update_user(name, disabled=True)
        return {**user, "revoked_keys": c.keys.revoke_user(name)}

    user = admin_change(cli, "users.disable", name, run)
    cli.emit(user, as_json, f"user {name} disabled; {user['revoked_keys']} key(s) revoked")


def users_enable(
    ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False
) -> None:
    """Enable a disabled user again (their old keys stay revoked)."""
    cli = AppContext.of(ctx)
    user = admin_change(cli, "users.enable", name, lambda c: c.identity.update_user(name, disabled=False))
    cli.emit(user, as_json, f"user {name} enabled")


def users_passwd(ctx: typer.Context, name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Set a user's UI password (read from stdin, or prompted on a tty)."""
    cli = AppContext.of(ctx)
    password = _read_password(cli)
    admin_change(cli, "users.passwd", name, lambda c: c.identity.update_user(name, password=password))
    typer.echo(f"password of {name} set")


def users_role(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Argument(help="admin, curator, employee or app.")],
) -> None:
    """Change a user's role (their keys never carry more than it)."""
    cli = AppContext.of(ctx)
    admin_change(cli, "users.role", name, lambda c: c.identity.update_user(name, role=role), role=role)
    typer.echo(f"{name} is now {role}")


# -- groups --------------------------------------------------------------------------------------


def groups_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    parent: Annotated[str | None, typer.Option("--parent", help="Group this one belongs to.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a group, optionally inside another (a department of a division)."""
    cli = AppContext.of(ctx)
    group = admin_change(cli, "groups.add", name, lambda c: c.identity.add_group(name, parent), parent=parent)
    cli.emit(group, as_json, f"group {name} created" + (f" in {parent}" if parent else ""))


def groups_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups with their members."""
    cli = AppContext.of(ctx)
    data = admin_read(cli, lambda c: c.identity.list_groups())
    human = "\n".join(
        f"{g['name']:20} in: {', '.join(g['parents']) or '-':20} users: {', '.join(g['users']) or '-'}"
        f"  groups: {', '.join(g['groups']) or '-'}"
        for g in data
    )
    cli.emit(data, as_json, human or "no groups")


GroupArg = Annotated[str, typer.Argument(help="Group.")]
IsGroupOpt = Annotated[bool, typer.Option("--group", help="MEMBER is a group.")]


def groups_add_member(
    ctx: typer.Context,
    group: GroupArg,
    member: Annotated[str, typer.Argument(help="User (or, with --group, group) to add.")],
    is_group: IsGroupOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a user or a group to a group (cycles are refused)."""
    _membership(AppContext.of(ctx), True, group, member, is_group, as_json)


def groups_remove_member(
    ctx: typer.Context,
    group: GroupArg,
    member: Annotated[str, typer.Argument(help="User (or, with --group, group) to remove.")],
    is_group: IsGroupOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a direct member from a group."""
    _membership(AppContext.of(ctx), False, group, member, is_group, as_json)


def _membership(cli: AppContext, add: bool, group: str, member: str, is_group: bool, as_json: bool) -> None:
    kind = "group" if is_group else "user"
    data = admin_change(
        cli,
        "groups.add_member" if add else "groups.remove_member",
        group,
        lambda c: (c.identity.add_member if add else c.identity.remove_member)(group, member, kind),
        member=f"{kind}:{member}",
    )
    cli.emit(data, as_json, f"{kind} {member} {'added to' if add else 'removed from'} {group}")


# -- keys ----------------------------------------------------------------------------------------


def keys_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="Owner of the key (an existing user).")],
    role: Annotated[
        str | None, typer.Option("--role", help="Default: the user's role; never higher.")
    ] = None,
    collection: Annotated[
        list[str] | None,
        typer.Option("--collection", "-c", help="Limit to this collection (repeatable)."),
    ] = None,
    route: Annotated[
        list[str] | None,
        typer.Option("--route", help="Limit to this path prefix, e.g. /v1 (repeatable)."),
    ] = None,
    expires_days: Annotated[
        float | None, typer.Option("--expires-days", min=0.001, help="Expire after N days.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key. It is printed once and stored only as a hash. A user that does not
    exist yet is created first, with --role (default employee) and no groups."""
    # Imported here: the key store pulls in SQLAlchemy, which `--help` does not need.
    from appliance.security.auth import issue_key

    cli = AppContext.of(ctx)

    def run(c: Any) -> Any:
        if c.identity.lookup(user) is None:
            c.identity.add_user(user, role or "employee")
            audit_admin(c.audit, actor(), "users.add", user, role=role or "employee", groups=[])
            typer.echo(f"created user {user} ({role or 'employee'})", err=True)
        return issue_key(c.keys, c.identity, user, role, collection, route, expires_days)

    issued = admin_change(
        cli,
        "keys.create",
        user,
        run,
        collections=collection,
        routes=route,
        expires_days=expires_days,
    )
    cli.emit(issued.as_dict(), as_json, issued.key)


def keys_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List keys (never the keys themselves: only their first characters)."""
    cli = AppContext.of(ctx)
    data = admin_read(cli, lambda c: c.keys.list(user))
    human = "\n".join(
        f"{k['id']:5} {k['prefix']}…  {k['user']:16} {k['role']:9} "
        f"{'active ' if k['active'] else 'revoked' if k['revoked_at'] else 'expired'} "
        f"expires {k['expires_at'] or 'never'}"
        + (f" collections={','.join(k['collections'])}" if k["collections"] else "")
        + (f" routes={','.join(k['routes'])}" if k["routes"] else "")
        for k in data
    )
    cli.emit(data, as_json, human or "no keys")


def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[int, typer.Argument(help="Key id (from `keys list`).")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke a key; it stops working on the next request."""
    cli = AppContext.of(ctx)
    data = admin_change(cli, "keys.revoke", f"key:{key_id}", lambda c: c.keys.revoke(key_id))
    cli.emit(data, as_json, f"key {key_id} of {data['user']} revoked")
