"""CLI command groups beyond the core ones in ``appliance.cli``.

Each module here defines ``register(app: typer.Typer) -> None`` and is listed in ``MODULES``; the
core CLI calls every one at import. Keeping each area's commands in its own module keeps cli.py
small and lets areas grow without touching each other.
"""

from __future__ import annotations

import importlib

import typer

MODULES: list[str] = [
    # one line per module, e.g. "appliance.commands.evaluation",
    "appliance.commands.doctor",
    "appliance.commands.identity",
    "appliance.commands.audit",
    "appliance.commands.evaluation",
]


def register_all(app: typer.Typer) -> None:
    for name in MODULES:
        importlib.import_module(name).register(app)
