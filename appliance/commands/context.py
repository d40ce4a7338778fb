"""The state of one ``appliance`` invocation, carried in Typer's ``ctx.obj``.

The root callback creates one :class:`AppContext` and closes it when the command ends; commands
take it with ``AppContext.of(ctx)``. It loads the settings once, builds at most one
:class:`~appliance.container.Container`, and knows whether a running ``appliance serve`` owns
the data dir (then commands that touch the data go through its API instead).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from appliance.commands.output import emit, fail
from appliance.commands.remote import RemoteServer
from appliance.domain import LOCAL_ADMIN, ApplianceError, NotFound, Principal
from appliance.egress import install_guard

if TYPE_CHECKING:
    from appliance.container import Container
    from appliance.settings import Settings


QUIET_LOGGERS = ("httpx", "httpcore", "alembic.runtime.plugins")


class AppContext:
    """Settings, the one container, the running server's client and the output helpers of one
    command. Nothing is loaded before a command asks for it, so ``--help`` stays cheap."""

    emit = staticmethod(emit)
    fail = staticmethod(fail)

    def __init__(self, config: Path | None = None) -> None:
        self.config = config
        self._settings: Settings | None = None
        self._container: Container | None = None
        self._remote: RemoteServer | None = None

    @classmethod
    def of(cls, ctx: typer.Context) -> AppContext:
        """The invocation's context; made here when a command runs without the root callback
        (e.g. in a Typer app of its own), reading ``$APPLIANCE_CONFIG`` as ``--config``."""
        found = ctx.find_object(cls)
        if found is None:
            found = ctx.find_root().ensure_object(cls)
            ctx.find_root().call_on_close(found.close)
        return found

    @property
    def settings(self) -> Settings:
        """The effective settings (defaults, ``--config`` YAML, environment); invalid ones end
        the command with exit code 2. Loading them also sets up logging and the egress guard."""
        if self._settings is None:
            # Imported on first use: pydantic-settings is not needed for `--help`.
            from appliance.settings import load_settings

            try:
                settings = load_settings(self.config)
            except Exception as exc:
                fail(f"invalid settings: {exc}", 2)
            logging.basicConfig(
                level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
            )
            if settings.log_level != "DEBUG":
                # Libraries that tell each step at INFO: every health probe of a worker (httpx),
                # every plugin of the schema check at start (alembic). Their warnings still show.
                for name in QUIET_LOGGERS:
                    logging.getLogger(name).setLevel(logging.WARNING)
            if settings.egress.block:
                install_guard(settings.egress.allow)
            self._settings = settings
        return self._settings

    @property
    def container(self) -> Container:
        """The one container of this invocation, built on first use. It does not own the
        embedded stores: commands that open them call :meth:`local`."""
        if self._container is None:
            # Imported on first use: the composition root pulls in the service modules.
            from appliance.container import Container

            self._container = Container(self.settings)
        return self._container

    def local(self) -> Container:
        """The container as the single owner of the data dir; fails when another process owns it."""
        container = self.container
        try:
            container.acquire()
        except ApplianceError as exc:
            fail(exc.message)
        return container

    def remote(self, user: str | None = None) -> RemoteServer | None:
        """The running server's API when `appliance serve` owns the data dir, else None. It acts
        as the local administrator, so ``--user`` is refused there."""
        from appliance.container import read_server_info

        if self._remote is None:
            info = read_server_info(self.container.data_dir)
            if info is None:
                return None
            self._remote = RemoteServer(info)
        if user is not None:
            fail(
                "--user is not supported while `appliance serve` owns the data dir; "
                "use an API key of that user"
            )
        return self._remote

    def principal(self, user: str | None) -> Principal:
        """The local administrator, or the named user as stored (role and ALL groups); an
        unknown or disabled user ends the command."""
        if user is None:
            return LOCAL_ADMIN
        try:
            principal: Principal = self.container.identity.principal(user)
        except NotFound as exc:
            fail(exc.message)
        return principal

    def close(self) -> None:
        """Idempotent: stop what the command started and give up the data dir."""
        if self._remote is not None:
            self._remote.close()
            self._remote = None
        if self._container is not None:
            self._container.close()
