"""``appliance serve``: the REST API and the chat UI in one process, owner of the data dir."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from appliance.commands.context import AppContext
from appliance.domain import LOCAL_ADMIN
from appliance.security.auth import bootstrap_admin_to_file

log = logging.getLogger(__name__)


def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default from settings: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from settings: 8000).")] = None,
) -> None:
    """Run the REST API and the chat UI in one process."""
    # Imported here: the web stack and the UI are heavy and only this command needs them.
    import uvicorn

    from appliance.api.app import create_app
    from appliance.container import clear_server_info, write_server_info
    from ui.app import mount_ui

    cli = AppContext.of(ctx)
    settings = cli.settings
    host = host or settings.server.host
    port = port if port is not None else settings.server.port
    container = cli.local()
    first = bootstrap_admin_to_file(container.keys, container.data_dir)
    display_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{display_host}:{port}"
    write_server_info(container.data_dir, url, container.keys.add_ephemeral(LOCAL_ADMIN))
    lines = [
        "",
        f"  Knowledge-base appliance on {url}/",
        f"  Chat UI:   {url}/",
        f"  API docs:  {url}/docs",
        f"  OpenAI:    {url}/v1  (Authorization: Bearer <key>)",
        f"  Data dir:  {container.data_dir}",
    ]
    if first:
        issued, key_file = first
        lines += [
            "",
            "  First start: an admin API key was created. It is shown only this once:",
            f"    {issued.key}",
            f"  It is also in {key_file} (readable by this account only): store it elsewhere,",
            "  then delete that file. UI login: user 'admin', password: that key.",
        ]
        log.warning("first start: the admin API key was written to %s (mode 0600)", key_file)
    elif settings.auth.admin_key:
        lines += ["", "  Admin key: taken from APPLIANCE_AUTH__ADMIN_KEY. UI login: user 'admin'."]
    typer.echo("\n".join(lines) + "\n", err=True)
    try:
        uvicorn.run(
            create_app(container, mount_ui), host=host, port=port, log_level=settings.log_level.lower()
        )
    finally:
        clear_server_info(container.data_dir)
        container.close()
