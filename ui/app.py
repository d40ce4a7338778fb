"""Mount the Gradio UI on the FastAPI app.

Sign-in: user name and password (argon2-verified), or user name and one of that user's API keys
(the bootstrap admin has no password until one is set: it signs in with the printed key). The
chat acts as the user as stored NOW (role, groups, disabled), resolved on every message, so a
membership change or a disabled account applies to the next question. Cookie and CSRF
hardening around Gradio's login is in appliance/api/middleware.py.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import gradio as gr
from fastapi import FastAPI

from appliance.audit import AuditEvent
from appliance.domain import NotFound, Principal
from ui.chat import build_chat

log = logging.getLogger(__name__)


class LiveSessions(dict):  # type: ignore[type-arg]
    """Signed-in user names; ``get`` returns the user's principal as it is in the DB right now,
    or None once the user was disabled or deleted."""

    def __init__(self, container: Any) -> None:
        super().__init__()
        self.container = container

    def get(self, name: str, default: Any = None) -> Principal | None:  # type: ignore[override]
        if name not in self:
            return default
        try:
            return self.container.identity.principal(name)  # type: ignore[no-any-return]
        except NotFound:
            return default


def make_login(container: Any, sessions: dict[str, Any]) -> Any:
    def login_sync(username: str, password: str) -> bool:
        ok = _check(container, username, password)
        try:
            container.audit.append(
                AuditEvent(username, "auth.login" if ok else "auth.denied", "ui", {"via": "ui"})
            )
        except Exception:
            log.exception("could not audit a UI sign-in")
        if ok:
            sessions[username] = True
        return ok

    async def login(username: str, password: str) -> bool:
        # argon2 takes tens of milliseconds on purpose: keep it off the event loop.
        return await asyncio.to_thread(login_sync, username, password)

    return login


def _check(container: Any, username: str, password: str) -> bool:
    if not username or not password:
        return False
    if container.identity.check_password(username, password):
        return container.identity.lookup(username)[0] != "app"  # type: ignore[index]
    principal = container.keys.authenticate(password)
    if principal is None or principal.name != username or principal.role == "app":
        return False
    found = container.identity.lookup(username)
    return found is not None and not found[1]


def mount_ui(app: FastAPI, container: Any, path: str = "/") -> FastAPI:
    sessions = LiveSessions(container)
    blocks = build_chat(container, sessions)
    return gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth=make_login(container, sessions),
        auth_message="Sign in with your user name and password (or an API key of yours).",
        ssr_mode=False,
        footer_links=[],
    )
