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
from dataclasses import dataclass, field
from typing import Any, TypeVar

import gradio as gr

from appliance.audit import AuditEvent
from appliance.domain import EVERYONE, ApplianceError, Forbidden, Overloaded, Principal
from appliance.language import request_language
from appliance.security.acl import is_curator
from ui.chat.render import retry_notice
from ui.i18n import Lang, t, term

log = logging.getLogger(__name__)
T = TypeVar("T")


C = TypeVar("C")


class Labels:
    """The console's translatable component texts: each component with the catalogue keys of the
    properties to translate (``label``, ``value``, ``placeholder``, ``info``; a list of keys, or
    of ``(key, value)`` pairs for ``choices``). Built once with the page, the same for everyone;
    ``updates(lang)`` relabels every one of them for one browser."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, component: C, **keys: Any) -> C:
        self.items.append((component, keys))
        return component

    @property
    def components(self) -> list[Any]:
        return [c for c, _ in self.items]

    def updates(self, lang: str) -> list[Any]:
        return [gr.update(**{prop: tr(lang, key) for prop, key in keys.items()}) for _, keys in self.items]


def tr(lang: str, key: Any) -> Any:
    """``key`` in ``lang``: a catalogue key, a list of them, or ``(key, value)`` choice pairs."""
    if isinstance(key, str):
        return t(lang, key)
    if isinstance(key, tuple):
        return (t(lang, key[0]), key[1])
    return [tr(lang, k) for k in key]


def table(lang: str, header_keys: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A Dataframe value with its headers in ``lang`` (a value carries its own headers)."""
    return {"headers": [t(lang, k) for k in header_keys], "data": rows}


class Refused(Exception):
    """The session has ended or may not use the console: nothing is done."""


@dataclass
class Console:
    """What the pages receive: the container (for its services) and the live sessions."""

    container: Any
    sessions: Any

    labels: Labels = field(default_factory=Labels)

    def lang(self, request: Any) -> Lang:
        """The language of this browser: its choice on the switch (a cookie), else its
        ``Accept-Language``, as the chat picks it."""
        return request_language(getattr(request, "headers", None), getattr(request, "cookies", None))

    def t(self, request: Any, key: str, **values: Any) -> str:
        return t(self.lang(request), key, **values)

    def who(self, request: gr.Request) -> Principal | None:
        return self.sessions.get(request.username or "")  # type: ignore[no-any-return]

    def curator(self, request: gr.Request) -> Principal:
        """The session's principal, if it may use the console (curators and admins)."""
        principal = self.who(request)
        if principal is None:
            raise Refused(self.t(request, "c_session_ended"))
        if not is_curator(principal):
            raise Refused(self.t(request, "c_refused_title"))
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


def message(exc: Exception, lang: str = "en") -> str:
    """The text shown for a failed action, as a sentence: the service's own message for our typed
    errors (with when to retry for a busy or over-quota one), never a traceback or JSON."""
    if isinstance(exc, Refused):
        return str(exc)
    if isinstance(exc, Overloaded):
        when = retry_notice(exc.retry_after)
        return t(lang, "c_busy", message=exc.message, when=t(lang, when["key"], **when["values"]))
    if isinstance(exc, ApplianceError):
        return t(lang, "c_failed", message=exc.message)
    log.exception("console action failed", exc_info=exc)
    return t(lang, "c_failed", message=t(lang, "c_internal", name=type(exc).__name__))


def notice(text: str, kind: str = "ok") -> str:
    """A status line, escaped: service messages may quote paths, titles or URLs."""
    return f'<div class="kb-notice kb-{kind}">{html.escape(text)}</div>'


def failed(exc: Exception, lang: str = "en") -> str:
    return notice(message(exc, lang), "error")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def readers_text(lang: str, tokens: Any) -> str:
    """Access tokens as the console shows them: ``*`` as "everyone signed in", the rest as stored."""
    return ", ".join(t(lang, "c_everyone") if a == EVERYONE else str(a) for a in tokens)


def yes_no(lang: str, value: Any) -> str:
    """A table's true/false cell in words of ``lang``."""
    return t(lang, "c_yes" if value else "c_no")


def split_list(text: str | None) -> list[str]:
    """``group:a, user:b`` (commas or new lines) as a list."""
    return [p.strip() for p in (text or "").replace("\n", ",").split(",") if p.strip()]


def collection_names(console: Console, principal: Principal) -> list[str]:
    """Collections the principal curates (admins: all), for the pickers of write actions."""
    return sorted(console.container.collections.curated(principal))


def refusal_html(principal: Principal | None, lang: str = "en") -> str:
    """The one page an employee sees here, in the console's language (chosen as the chat's)."""
    if principal is None:
        return notice(t(lang, "c_session_ended"), "error")
    body = t(lang, "c_refused_body", user=principal.name, role=term(lang, "c_role_", principal.role))
    return (
        f'<div id="kb-admin-refused" class="kb-refused"><h2>{esc(t(lang, "c_refused_title"))}</h2>'
        f'<p>{esc(body)}</p><p><a href="/">{esc(t(lang, "c_back_to_chat"))}</a> · '
        f'<a href="/admin/logout">{esc(t(lang, "sign_out"))}</a></p></div>'
    )
