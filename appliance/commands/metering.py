"""``appliance usage`` and ``appliance quotas``: tokens and requests per user, group and key, and
the limits on them. Changes go to the metadata DB directly (see ``appliance.commands.admin``)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from appliance.commands.admin import admin_change, admin_read
from appliance.commands.context import AppContext
from appliance.commands.options import JsonOpt


def quotas_group() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help="Token and request quotas per user or group.")
    group.command("set")(quotas_set)
    group.command("list")(quotas_list)
    return group


def usage(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option("--since", help="First day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last day, YYYY-MM-DD.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="user, group or key.")] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Tokens and requests per user, group and API key per day."""
    # Imported here: metering pulls in SQLAlchemy, which `--help` does not need.
    from appliance.metering import to_csv

    cli = AppContext.of(ctx)
    rows = admin_read(cli, lambda c: c.metering.report(since, until, None, kind))
    if csv_out:
        sys.stdout.write(to_csv(rows))
        return
    human = "\n".join(
        f"{r['day']}  {r['subject']:28} {r['requests']:6} req {r['prompt_tokens']:8} prompt "
        f"{r['completion_tokens']:8} completion"
        for r in rows
    )
    cli.emit({"data": rows}, as_json, human or "no usage recorded")


def quotas_set(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="user:NAME or group:NAME.")],
    tokens_per_day: Annotated[int | None, typer.Option("--tokens-per-day", min=1)] = None,
    rpm: Annotated[int | None, typer.Option("--requests-per-minute", "--rpm", min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set (replace) a quota; unset limits are unlimited for that subject."""
    cli = AppContext.of(ctx)
    data = admin_change(
        cli,
        "quotas.set",
        subject,
        lambda c: c.metering.set_quota(subject, tokens_per_day, rpm),
        tokens_per_day=tokens_per_day,
        requests_per_minute=rpm,
    )
    cli.emit(
        data,
        as_json,
        f"quota of {subject}: {tokens_per_day or '∞'} tokens/day, {rpm or '∞'} requests/min",
    )


def quotas_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List quotas."""
    cli = AppContext.of(ctx)
    data = admin_read(cli, lambda c: c.metering.list_quotas())
    human = "\n".join(
        f"{q['subject']:28} {q['tokens_per_day'] or '∞'} tokens/day  {q['requests_per_minute'] or '∞'} req/min"
        for q in data
    )
    cli.emit(data, as_json, human or "no quotas (defaults apply)")
