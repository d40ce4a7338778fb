"""``appliance config show``: the effective settings."""

from __future__ import annotations

import typer

from appliance.commands.context import AppContext
from appliance.commands.options import JsonOpt


def config_group() -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help="Settings.")
    group.command("show")(config_show)
    return group


def config_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print the effective settings, secrets redacted."""
    # Imported here, as the settings themselves are: `--help` needs neither YAML nor pydantic.
    import yaml

    from appliance.settings import redacted

    cli = AppContext.of(ctx)
    data = redacted(cli.settings)
    cli.emit(data, as_json, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
