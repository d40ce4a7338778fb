"""``appliance users|groups|keys|usage|quotas``: identity, API keys and metering.

These commands work on the metadata DB directly (SQLite in WAL mode or PostgreSQL), so they run
beside a live ``appliance serve``; the server reads users and groups per request, so a change
applies to its next query. Every change is audited with the OS user as the actor.
"""

from __future__ import annotations

import getpass
import sys
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _container() -> Any:
    from appliance.cli import _settings
    from appliance.container import Container

    return Container(_settings())


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _run(action: str, target: str, fn: Any, **data: Any) -> Any:
    """Run one change, fail readably on a domain error, audit it when it succeeded."""
    from appliance.audit import audit_admin
    from appliance.cli import _fail
    from appliance.domain import ApplianceError

    container = _container()
    try:
        result = fn(container)
    except ApplianceError as exc:
        _fail(exc.message)
    if action:
        audit_admin(container.audit, _actor(), action, target, **data)
    return result


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != first:
            from appliance.cli import _fail

            _fail("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def register(app: typer.Typer) -> None:
    from appliance.audit import audit_admin
    from appliance.cli import _emit

    users_app = typer.Typer(no_args_is_help=True, help="Users and their roles.")
    groups_app = typer.Typer(no_args_is_help=True, help="Groups (departments); groups may contain groups.")
    keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
    quotas_app = typer.Typer(no_args_is_help=True, help="Token and request quotas per user or group.")
    app.add_typer(users_app, name="users")
    app.add_typer(groups_app, name="groups")
    app.add_typer(keys_app, name="keys")
    app.add_typer(quotas_app, name="quotas")

    # -- users ------------------------------------------------------------------------------------

    @users_app.command("add")
    def users_add(
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
        password = _read_password() if password_stdin else None
        user = _run(
            "users.add",
            name,
            lambda c: c.identity.add_user(name, role, group or [], password),
            role=role,
            groups=group or [],
        )
        _emit(user, as_json, f"user {name} ({role}) created; groups: {', '.join(user['groups']) or '-'}")

    @users_app.command("list")
    def users_list(as_json: JsonOpt = False) -> None:
        """List users with their direct and resolved groups."""
        data = _run("", "", lambda c: c.identity.list_users())
        human = "\n".join(
            f"{u['name']:20} {u['role']:9} {'disabled' if u['disabled'] else 'active  '} "
            f"{', '.join(u['all_groups']) or '-'}"
            for u in data
        )
        _emit(data, as_json, human or "no users")

    @users_app.command("disable")
    def users_disable(
        name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False
    ) -> None:
        """Disable a user and revoke all their API keys."""

        def run(c: Any) -> Any:
            user = c.identity.update_user(name, disabled=True)
            return {**user, "revoked_keys": c.keys.revoke_user(name)}

        user = _run("users.disable", name, run)
        _emit(user, as_json, f"user {name} disabled; {user['revoked_keys']} key(s) revoked")

    @users_app.command("enable")
    def users_enable(
        name: Annotated[str, typer.Argument(help="User name.")], as_json: JsonOpt = False
    ) -> None:
        """Enable a disabled user again (their old keys stay revoked)."""
        user = _run("users.enable", name, lambda c: c.identity.update_user(name, disabled=False))
        _emit(user, as_json, f"user {name} enabled")

    @users_app.command("passwd")
    def users_passwd(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
        """Set a user's UI password (read from stdin, or prompted on a tty)."""
        password = _read_password()
        _run("users.passwd", name, lambda c: c.identity.update_user(name, password=password))
        typer.echo(f"password of {name} set")

    @users_app.command("role")
    def users_role(
        name: Annotated[str, typer.Argument(help="User name.")],
        role: Annotated[str, typer.Argument(help="admin, curator, employee or app.")],
    ) -> None:
        """Change a user's role (their keys never carry more than it)."""
        _run("users.role", name, lambda c: c.identity.update_user(name, role=role), role=role)
        typer.echo(f"{name} is now {role}")

    # -- groups -----------------------------------------------------------------------------------

    @groups_app.command("add")
    def groups_add(
        name: Annotated[str, typer.Argument(help="Group name.")],
        parent: Annotated[str | None, typer.Option("--parent", help="Group this one belongs to.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Create a group, optionally inside another (a department of a division)."""
        group = _run("groups.add", name, lambda c: c.identity.add_group(name, parent), parent=parent)
        _emit(group, as_json, f"group {name} created" + (f" in {parent}" if parent else ""))

    @groups_app.command("list")
    def groups_list(as_json: JsonOpt = False) -> None:
        """List groups with their members."""
        data = _run("", "", lambda c: c.identity.list_groups())
        human = "\n".join(
            f"{g['name']:20} in: {', '.join(g['parents']) or '-':20} users: {', '.join(g['users']) or '-'}"
            f"  groups: {', '.join(g['groups']) or '-'}"
            for g in data
        )
        _emit(data, as_json, human or "no groups")

    @groups_app.command("add-member")
    def groups_add_member(
        group: Annotated[str, typer.Argument(help="Group.")],
        member: Annotated[str, typer.Argument(help="User (or, with --group, group) to add.")],
        is_group: Annotated[bool, typer.Option("--group", help="MEMBER is a group.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Add a user or a group to a group (cycles are refused)."""
        kind = "group" if is_group else "user"
        data = _run(
            "groups.add_member",
            group,
            lambda c: c.identity.add_member(group, member, kind),
            member=f"{kind}:{member}",
        )
        _emit(data, as_json, f"{kind} {member} added to {group}")

    @groups_app.command("remove-member")
    def groups_remove_member(
        group: Annotated[str, typer.Argument(help="Group.")],
        member: Annotated[str, typer.Argument(help="User (or, with --group, group) to remove.")],
        is_group: Annotated[bool, typer.Option("--group", help="MEMBER is a group.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Remove a direct member from a group."""
        kind = "group" if is_group else "user"
        data = _run(
            "groups.remove_member",
            group,
            lambda c: c.identity.remove_member(group, member, kind),
            member=f"{kind}:{member}",
        )
        _emit(data, as_json, f"{kind} {member} removed from {group}")

    # -- keys -------------------------------------------------------------------------------------

    @keys_app.command("create")
    def keys_create(
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
        from appliance.security.auth import issue_key

        def run(c: Any) -> Any:
            if c.identity.lookup(user) is None:
                c.identity.add_user(user, role or "employee")
                audit_admin(c.audit, _actor(), "users.add", user, role=role or "employee", groups=[])
                typer.echo(f"created user {user} ({role or 'employee'})", err=True)
            return issue_key(c.keys, c.identity, user, role, collection, route, expires_days)

        issued = _run(
            "keys.create",
            user,
            run,
            collections=collection,
            routes=route,
            expires_days=expires_days,
        )
        _emit(issued.as_dict(), as_json, issued.key)

    @keys_app.command("list")
    def keys_list(
        user: Annotated[str | None, typer.Option("--user", help="Only this user's keys.")] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """List keys (never the keys themselves: only their first characters)."""
        data = _run("", "", lambda c: c.keys.list(user))
        human = "\n".join(
            f"{k['id']:5} {k['prefix']}…  {k['user']:16} {k['role']:9} "
            f"{'active ' if k['active'] else 'revoked' if k['revoked_at'] else 'expired'} "
            f"expires {k['expires_at'] or 'never'}"
            + (f" collections={','.join(k['collections'])}" if k["collections"] else "")
            + (f" routes={','.join(k['routes'])}" if k["routes"] else "")
            for k in data
        )
        _emit(data, as_json, human or "no keys")

    @keys_app.command("revoke")
    def keys_revoke(
        key_id: Annotated[int, typer.Argument(help="Key id (from `keys list`).")], as_json: JsonOpt = False
    ) -> None:
        """Revoke a key; it stops working on the next request."""
        data = _run("keys.revoke", f"key:{key_id}", lambda c: c.keys.revoke(key_id))
        _emit(data, as_json, f"key {key_id} of {data['user']} revoked")

    # -- usage and quotas -------------------------------------------------------------------------

    @app.command("usage")
    def usage_cmd(
        since: Annotated[str | None, typer.Option("--since", help="First day, YYYY-MM-DD.")] = None,
        until: Annotated[str | None, typer.Option("--until", help="Last day, YYYY-MM-DD.")] = None,
        kind: Annotated[str | None, typer.Option("--kind", help="user, group or key.")] = None,
        csv_out: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
        as_json: JsonOpt = False,
    ) -> None:
        """Tokens and requests per user, group and API key per day."""
        from appliance.metering import to_csv

        rows = _run("", "", lambda c: c.metering.report(since, until, None, kind))
        if csv_out:
            sys.stdout.write(to_csv(rows))
            return
        human = "\n".join(
            f"{r['day']}  {r['subject']:28} {r['requests']:6} req {r['prompt_tokens']:8} prompt "
            f"{r['completion_tokens']:8} completion"
            for r in rows
        )
        _emit({"data": rows}, as_json, human or "no usage recorded")

    @quotas_app.command("set")
    def quotas_set(
        subject: Annotated[str, typer.Argument(help="user:NAME or group:NAME.")],
        tokens_per_day: Annotated[int | None, typer.Option("--tokens-per-day", min=1)] = None,
        rpm: Annotated[int | None, typer.Option("--requests-per-minute", "--rpm", min=1)] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Set (replace) a quota; unset limits are unlimited for that subject."""
        data = _run(
            "quotas.set",
            subject,
            lambda c: c.metering.set_quota(subject, tokens_per_day, rpm),
            tokens_per_day=tokens_per_day,
            requests_per_minute=rpm,
        )
        _emit(
            data,
            as_json,
            f"quota of {subject}: {tokens_per_day or '∞'} tokens/day, {rpm or '∞'} requests/min",
        )

    @quotas_app.command("list")
    def quotas_list(as_json: JsonOpt = False) -> None:
        """List quotas."""
        data = _run("", "", lambda c: c.metering.list_quotas())
        human = "\n".join(
            f"{q['subject']:28} {q['tokens_per_day'] or '∞'} tokens/day  {q['requests_per_minute'] or '∞'} req/min"
            for q in data
        )
        _emit(data, as_json, human or "no quotas (defaults apply)")
