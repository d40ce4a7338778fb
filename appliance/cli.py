"""The ``appliance`` command: assembles the command groups of ``appliance.commands``.

Commands that touch the data (ingest, ask, search, eval, verify) go through the API of a running
``appliance serve`` on the same data dir (it owns the embedded shard); otherwise they open the
data dir themselves. They act as the local administrator unless ``--user`` says otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from appliance.commands import (
    ask,
    audit,
    config,
    doctor,
    evaluation,
    identity,
    ingestion,
    metering,
    search,
    serve,
    worker,
)
from appliance.commands.context import AppContext
from appliance.egress import prepare_offline_env


def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", envvar="APPLIANCE_CONFIG", help="YAML settings file.")
    ] = None,
) -> None:
    ctx.obj = AppContext(config)
    ctx.call_on_close(ctx.obj.close)


def build_app() -> typer.Typer:
    """The whole command tree; each command receives the invocation's AppContext in ``ctx.obj``."""
    app = typer.Typer(
        no_args_is_help=True, add_completion=False, help="On-premises knowledge-base appliance."
    )
    app.callback()(main_options)
    app.command()(serve.serve)
    app.command()(worker.worker)
    app.command()(ingestion.ingest)
    app.command()(ask.ask)
    app.command()(search.search)
    app.add_typer(config.config_group(), name="config")
    app.command()(doctor.doctor)
    app.add_typer(identity.users_group(), name="users")
    app.add_typer(identity.groups_group(), name="groups")
    app.add_typer(identity.keys_group(), name="keys")
    app.add_typer(metering.quotas_group(), name="quotas")
    app.command()(metering.usage)
    app.add_typer(audit.audit_group(), name="audit")
    app.command("eval")(evaluation.eval_command)
    app.command()(ingestion.verify)
    return app


app = build_app()


def main() -> None:
    prepare_offline_env()
    app()


if __name__ == "__main__":
    main()
