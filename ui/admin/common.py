"""What every console page shares: who the session is, running an action the way its REST route
does (the same service method, then the same audit record), and escaped rendering.

The REST API audits its writes in a middleware (``appliance/api/middleware.py``: actor, ``METHOD
/api/v1/route``, path, status, key id, the route's details). The console calls the same service
methods and writes the same record through ``act``, with ``via: ui``, so an audit reader sees one
kind of record whichever surface was used. A refusal (401/403) is audited as ``auth.denied``, as
the middleware does.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr

from appliance.audit import AuditEvent
from appliance.domain import ApplianceError, Forbidden, Principal
from appliance.security.acl import is_curator
from ui.i18n import pick_language

log = logging.getLogger(__name__)
T = TypeVar("T")


class Refused(Exception):
    """The session has ended or may not use the console: nothing is done."""


@dataclass
class Console:
    """What the pages receive: the container (for its services) and the live sessions."""

    container: Any
    sessions: Any

    def who(self, request: gr.Request) -> Principal | None:
        return self.sessions.get(request.username or "")  # type: ignore[no-any-return]

    def curator(self, request: gr.Request) -> Principal:
        """The session's principal, if it may use the console (curators and admins)."""
        principal = self.who(request)
        if principal is None:
            raise Refused("Your session has ended: reload the page and sign in again.")
        if not is_curator(principal):
            raise Refused("The console is for admins and curators.")
        return principal

    def audit(self, principal: Principal, action: str, target: str, status: int, **data: Any) -> None:
        details = {"status": status, "key_id": principal.key_id, "via": "ui", **data}
        try:
            self.container.audit.append(AuditEvent(principal.name, action, target, details))
        except Exception:  # as in the middleware: a failed audit write must not undo a done action
            log.exception("could not audit the console action %s %s", action, target)

    def act(
        self,
        request: gr.Request,
        action: str,
        target: str,
        call: Callable[[Principal], T],
        admin: bool = False,
        record: bool = True,
        **data: Any,
    ) -> T:
        """Run ``call(principal)`` for a curator session (``admin``: an admin one, as the REST
        route's ``AdminDep``) and audit it like its REST route (``action``: ``METHOD
        /api/v1/route``; ``target``: the path it would have called). ``record=False`` for reads,
        which the REST API does not audit either (refusals are audited all the same)."""
        principal = self.curator(request)
        try:
            if admin and not principal.is_admin:
                raise Forbidden("this needs the admin role")
            result = call(principal)
        except ApplianceError as exc:
            status = getattr(exc, "status", 500)
            if status in (401, 403):
                self.denied(principal, target, status)
            raise
        if record:
            self.audit(principal, action, target, 200, **data)
        return result

    async def attempt(
        self,
        request: gr.Request,
        action: str,
        target: str,
        call: Callable[[Principal], T],
        done: Callable[[T], str],
        **data: Any,
    ) -> str:
        """``act`` off the event loop, told as one status line: ``done(result)``, or why it failed."""
        try:
            result = await asyncio.to_thread(lambda: self.act(request, action, target, call, **data))
        except Exception as exc:
            return failed(exc)
        return notice(done(result))

    def denied(self, principal: Principal, target: str, status: int) -> None:
        event = AuditEvent(principal.name, "auth.denied", target, {"status": status, "via": "ui"})
        try:
            self.container.audit.append(event)
        except Exception:
            log.exception("could not audit a console refusal")


def message(exc: Exception) -> str:
    """The text shown for a failed action: the service's own message for our typed errors."""
    if isinstance(exc, Refused | ApplianceError):
        return str(exc)
    log.exception("console action failed", exc_info=exc)
    return f"Failed: {type(exc).__name__}"


def notice(text: str, kind: str = "ok") -> str:
    """A status line, escaped: service messages may quote paths, titles or URLs."""
    return f'<div class="kb-notice kb-{kind}">{html.escape(text)}</div>'


def failed(exc: Exception) -> str:
    return notice(message(exc), "error")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def split_list(text: str | None) -> list[str]:
    """``group:a, user:b`` (commas or new lines) as a list."""
    return [p.strip() for p in (text or "").replace("\n", ",").split(",") if p.strip()]


def collection_names(console: Console, principal: Principal) -> list[str]:
    """Collections the principal curates (admins: all), for the pickers of write actions."""
    return sorted(console.container.collections.curated(principal))


# The one page an employee sees here, in the chat's languages (chosen as the chat chooses).
REFUSAL: dict[str, dict[str, str]] = {
    "en": {
        "title": "This console is for admins and curators",
        "body": "You are signed in as {user} ({role}). Ask an administrator if you need to manage "
        "sources or documents.",
        "chat": "Back to the chat",
        "sign_out": "Sign out",
        "ended": "Your session has ended: reload the page and sign in again.",
    },
    "zh": {
        "title": "此控制台仅供管理员和内容管理员使用",
        "body": "您当前以 {user}（{role}）身份登录。如需管理数据源或文档，请联系管理员。",
        "chat": "返回对话",
        "sign_out": "退出登录",
        "ended": "您的会话已结束：请刷新页面并重新登录。",
    },
}


def refusal_html(principal: Principal | None, accept_language: str | None = None) -> str:
    text = REFUSAL[pick_language(accept_language)]
    if principal is None:
        return notice(text["ended"], "error")
    body = text["body"].format(user=principal.name, role=principal.role)
    return (
        f'<div id="kb-admin-refused" class="kb-refused"><h2>{esc(text["title"])}</h2><p>{esc(body)}</p>'
        f'<p><a href="/">{esc(text["chat"])}</a> · <a href="/admin/logout">{esc(text["sign_out"])}</a></p></div>'
    )
