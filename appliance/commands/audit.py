"""``appliance audit verify|export|rotate``: the tamper-evident audit log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from appliance.audit import AuditLog, open_audit_log
from appliance.commands.context import AppContext
from appliance.commands.options import JsonOpt


def audit_group() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
    group.command("verify")(audit_verify)
    group.command("export")(audit_export)
    group.command("rotate")(audit_rotate)
    return group


def _log(cli: AppContext) -> AuditLog:
    # Not the container's log: that one starts by cutting off a torn last line, and `verify`
    # must report such a line, not repair it.
    return open_audit_log(cli.settings.audit, cli.container.data_dir)


def audit_verify(
    ctx: typer.Context,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="An exported log (from `audit export`) instead of the live one."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check the hash chain and its anchors; exit 1 and name the first bad record if tampered."""
    cli = AppContext.of(ctx)
    result = _log(cli).verify(file)
    human = (
        f"audit log intact: {result.records} records"
        if result.ok
        else f"audit log TAMPERED at line {result.first_bad}: {result.reason} "
        f"({result.records} records verified before it)"
    )
    cli.emit(result.as_dict(), as_json, human)
    if not result.ok:
        raise typer.Exit(1)


def audit_export(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
) -> None:
    """Export the audit log as JSON lines for a SIEM, ending in a trailer that pins its length
    and head hash (verifiable with `audit verify --file`)."""
    data = _log(AppContext.of(ctx)).export(out)
    if out is None:
        sys.stdout.write(data)


def audit_rotate(
    ctx: typer.Context,
    days: Annotated[
        int | None,
        typer.Option("--days", min=0, help="Retention in days (default: audit.retention_days)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move records older than the retention to audit/archive/ and anchor the live log."""
    cli = AppContext.of(ctx)
    log = _log(cli)
    retention = cli.settings.audit.retention_days if days is None else days
    if not retention:
        cli.fail("no retention configured: pass --days N or set audit.retention_days")
    result = log.rotate(retention)
    cli.emit(
        result,
        as_json,
        f"archived {result['archived']} record(s)"
        + (f" to {result['archive']}" if result.get("archive") else ""),
    )
