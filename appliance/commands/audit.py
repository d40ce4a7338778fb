"""``appliance audit verify|export|rotate``: the tamper-evident audit log."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]


def _log() -> Any:
    from appliance.audit import open_audit_log
    from appliance.cli import _settings

    settings = _settings()
    return open_audit_log(settings.audit, Path(settings.data_dir).expanduser().resolve()), settings


def register(app: typer.Typer) -> None:
    from appliance.cli import _emit

    audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident audit log.")
    app.add_typer(audit_app, name="audit")

    @audit_app.command("verify")
    def audit_verify(
        file: Annotated[
            Path | None,
            typer.Option("--file", help="An exported log (from `audit export`) instead of the live one."),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Check the hash chain and its anchors; exit 1 and name the first bad record if tampered."""
        log, _ = _log()
        result = log.verify(file)
        human = (
            f"audit log intact: {result.records} records"
            if result.ok
            else f"audit log TAMPERED at line {result.first_bad}: {result.reason} "
            f"({result.records} records verified before it)"
        )
        _emit(result.as_dict(), as_json, human)
        if not result.ok:
            raise typer.Exit(1)

    @audit_app.command("export")
    def audit_export(
        out: Annotated[Path | None, typer.Option("--out", help="Write to this file.")] = None,
    ) -> None:
        """Export the audit log as JSON lines for a SIEM, ending in a trailer that pins its length
        and head hash (verifiable with `audit verify --file`)."""
        log, _ = _log()
        data = log.export(out)
        if out is None:
            sys.stdout.write(data)

    @audit_app.command("rotate")
    def audit_rotate(
        days: Annotated[
            int | None,
            typer.Option("--days", min=0, help="Retention in days (default: audit.retention_days)."),
        ] = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Move records older than the retention to audit/archive/ and anchor the live log."""
        from appliance.cli import _fail

        log, settings = _log()
        retention = settings.audit.retention_days if days is None else days
        if not retention:
            _fail("no retention configured: pass --days N or set audit.retention_days")
        result = log.rotate(retention)
        _emit(
            result,
            as_json,
            f"archived {result['archived']} record(s)"
            + (f" to {result['archive']}" if result.get("archive") else ""),
        )
