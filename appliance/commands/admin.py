"""How the administration commands (users, groups, keys, quotas) make a change: on the metadata DB
directly, so they run beside a live ``appliance serve`` (it reads users, groups and quotas per
request, so a change applies to its next query), and audited with the OS user as the actor."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from typing import Any, TypeVar

from appliance.audit import audit_admin
from appliance.commands.context import AppContext
from appliance.domain import ApplianceError

T = TypeVar("T")


def actor() -> str:
    """Who made a change from the CLI, as the audit log names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def admin_read(cli: AppContext, fn: Callable[[Any], T]) -> T:
    """``fn(container)``; a domain error (unknown name, bad value) ends the command readably."""
    try:
        return fn(cli.container)
    except ApplianceError as exc:
        cli.fail(exc.message)


def admin_change(cli: AppContext, action: str, target: str, fn: Callable[[Any], T], **data: Any) -> T:
    """Run ``fn(container)`` like :func:`admin_read` and audit it as ``action`` on ``target``
    once it succeeded."""
    result = admin_read(cli, fn)
    audit_admin(cli.container.audit, actor(), action, target, **data)
    return result
