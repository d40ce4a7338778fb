"""Mount the Gradio UI on the FastAPI app.

Sign-in: user name and password (argon2-verified), or user name and one of that user's API keys
(the bootstrap admin has no password until one is set: it signs in with the printed key). A
session acts as the user as stored NOW (role, groups, disabled), resolved on every request, so a
membership change or a disabled account applies to the next question. A password session ends
``auth.session_hours`` after sign-in, and every session of a user ends once its password changes.
A session signed in with a key is that key's session: its role cap and collection and route scopes apply, and once the key
is revoked or expires the session ends at its next request. Cookie and CSRF hardening around
Gradio's login is in appliance/api/middleware.py.

How the key reaches each request: Gradio keeps its sessions in ``App.tokens`` (cookie token ->
user name), assigns it right after our ``auth`` callback said yes, and reads it with ``.get`` on
every request. We replace that dict with ``SessionTokens``, which remembers how each token signed
in and re-checks it on every ``get``; the user name it hands Gradio is a ``SessionUser`` (a str
carrying the key id), which is what chat handlers then receive as ``request.username``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request, Response
from gradio.routes import App as GradioApp
from starlette.routing import Mount

from appliance.audit import AuditEvent
from appliance.domain import Forbidden, NotFound, Principal, Unauthenticated
from appliance.security.acl import check_collection_scope, check_route_scope
from appliance.security.auth import resolve_key_session
from appliance.security.sessions import SessionRecord, SessionStore, token_ref
from appliance.security.throttle import DeniedAudit, LoginThrottle, storage_uri
from ui.admin import ADMIN_CSS, build_admin
from ui.chat import CHAT_CSS, CHAT_HEAD, build_chat

log = logging.getLogger(__name__)
ADMIN_PATH = "/admin"
# A session signed in with a key lasts as long as its key; the store forgets one unused this long.
KEY_SESSION_HOURS = 24 * 30
_REF = "sha256:"


class SessionUser(str):
    """A signed-in user name as Gradio passes it around, with the id of the API key the session
    signed in with (None: a password, or the configured admin key / CLI token, which cannot be
    revoked one by one), when it signed in, and a stamp of the user's password then (None: not
    checked): a password change ends every UI session of the user opened before it."""

    key_id: int | None
    signed_in_at: float
    password_stamp: str | None

    def __new__(cls, name: str, key_id: int | None = None, password_stamp: str | None = None) -> SessionUser:
        user = super().__new__(cls, name)
        user.key_id = key_id
        user.signed_in_at = time.time()
        user.password_stamp = password_stamp
        return user

    def record(self) -> SessionRecord:
        return SessionRecord(str(self), self.key_id, self.signed_in_at, self.password_stamp)

    @classmethod
    def of(cls, record: SessionRecord) -> SessionUser:
        user = cls(record.user, record.key_id, record.password_stamp)
        user.signed_in_at = record.signed_in_at
        return user


# How the sign-in in progress authenticated: set by the auth callback, read when Gradio stores the
# new token in the same request. A context variable, not a dict by user name, so two concurrent
# sign-ins of one user (a password here, a scoped key there) cannot swap their grants.
_signing_in: ContextVar[SessionUser | None] = ContextVar("appliance_ui_signing_in", default=None)
# The address of the client of the request in progress, for the sign-in's rate limit (Gradio's
# auth callback receives only the user name and password).
_client: ContextVar[str | None] = ContextVar("appliance_ui_client", default=None)


def session_principal(container: Any, user: SessionUser, ui_path: str = "/") -> Principal | None:
    """Who a UI session acts as now, or None when it must end: the user is gone, disabled or an
    app, the key was revoked or expired, or the key's scopes do not cover the UI (its path, the
    default collection the chat asks)."""
    try:
        if (
            user.key_id is None
            and time.time() - user.signed_in_at > container.settings.auth.session_hours * 3600
        ):
            return None  # a password session expires; a key session lasts as long as its key
        if (
            user.password_stamp is not None
            and container.identity.password_stamp(str(user)) != user.password_stamp
        ):
            return None  # the password changed since this session signed in
        if user.key_id is None:
            principal: Principal = container.identity.principal(str(user))
        else:
            principal = resolve_key_session(container.identity, container.keys, user.key_id, str(user))
        if principal.role == "app":
            return None  # service accounts use the API, never the UI
        check_route_scope(principal, ui_path)
        check_collection_scope(principal, [None], container.settings.rag.default_collection)
    except (NotFound, Unauthenticated, Forbidden):  # identity's Disabled is a NotFound
        return None
    return principal


class SessionTokens(dict):  # type: ignore[type-arg]
    """Gradio's session table (token -> user name) that checks each session on every lookup and
    forgets the ones that must end. The sessions themselves are in ``store`` (Redis in scale mode,
    so every replica knows them); this dict stays empty. ``keys()`` gives references
    (``sha256:…``), never tokens, and indexing or deleting takes either: that is what Gradio's
    sign-out of all of a user's sessions iterates over."""

    def __init__(self, container: Any, ui_path: str, store: SessionStore) -> None:
        super().__init__()
        self.container = container
        self.ui_path = ui_path
        self.store = store
        self._listing: dict[str, SessionUser] = {}  # what the last keys() listed

    @staticmethod
    def _ref(token: Any) -> str | None:
        if not isinstance(token, str) or not token:
            return None
        return token[len(_REF) :] if token.startswith(_REF) else token_ref(token)

    def __setitem__(self, token: str, username: str) -> None:
        user = _signing_in.get()
        _signing_in.set(None)
        ref = self._ref(token)
        if user is None or user != username or ref is None:
            # Not a sign-in our auth callback approved in this request: store nothing (fail closed).
            log.warning("refusing a UI session for %r that no sign-in approved", username)
            return
        hours = self.container.settings.auth.session_hours if user.key_id is None else KEY_SESSION_HOURS
        self.store.put(ref, user.record(), hours * 3600)

    def _stored(self, token: Any) -> SessionUser | None:
        ref = self._ref(token)
        record = self.store.get(ref) if ref is not None else None
        return None if record is None else SessionUser.of(record)

    def get(self, token: Any, default: Any = None) -> Any:
        user = self._stored(token)
        if user is None:
            return default
        # A few indexed DB reads per UI request, on the event loop: Gradio's lookup is synchronous.
        if session_principal(self.container, user, self.ui_path) is None:
            self.pop(token, None)
            _audit(self.container, user, "auth.session_ended", {"key_id": user.key_id})
            return default
        return user

    def __getitem__(self, token: Any) -> Any:
        # Only Gradio's sign-out indexes, over ``keys()``, comparing with a user name: served from
        # the listing ``keys()`` just read, and a session gone since is None, not a KeyError.
        listed = self._listing.pop(token, None)
        return listed if listed is not None else self._stored(token)

    def __contains__(self, token: object) -> bool:
        return self._stored(token) is not None

    def __delitem__(self, token: Any) -> None:
        if not self.pop(token, None):
            raise KeyError(token)

    def pop(self, token: Any, default: Any = None) -> Any:
        user = self._stored(token)
        ref = self._ref(token)
        if user is None or ref is None or not self.store.delete(ref):
            return default
        return user

    def keys(self) -> list[str]:  # type: ignore[override]
        self._listing = {_REF + ref: SessionUser.of(r) for ref, r in self.store.records().items()}
        return list(self._listing)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.store.records())


class LiveSessions:
    """What the chat asks for each message: the principal of the session's user as it is now, or
    None once the session must end. Only names that came from ``SessionTokens`` are sessions."""

    def __init__(self, container: Any, ui_path: str = "/") -> None:
        self.container = container
        self.ui_path = ui_path

    def get(self, name: Any, default: Any = None) -> Principal | None:
        if not isinstance(name, SessionUser):
            return default
        return session_principal(self.container, name, self.ui_path) or default


def _audit(container: Any, actor: str, action: str, data: dict[str, Any]) -> None:
    try:
        container.audit.append(AuditEvent(str(actor), action, "ui", {"via": "ui", **data}))
    except Exception:
        log.exception("could not audit a UI %s", action)


def make_login(
    container: Any,
    ui_path: str = "/",
    throttle: LoginThrottle | None = None,
    denied: DeniedAudit | None = None,
) -> Any:
    """Gradio's ``auth`` callback. Failed attempts are limited per user name and per client
    address (``throttle``); refusals are audited within the bounds of ``denied``."""
    throttle = throttle or LoginThrottle(container.settings.auth.login_rate, storage_uri(container.settings))

    def refused(username: str, client: str | None, reason: str) -> None:
        if denied is not None:
            denied.record(username, "ui", client, {"via": "ui", "reason": reason})
        else:
            _audit(container, username, "auth.denied", {"reason": reason, "client": client})

    def login_sync(username: str, password: str, client: str | None) -> SessionUser | None:
        if not throttle.allowed(username, client):
            # Not even checked: a guess past the limit learns nothing, right or wrong.
            refused(username, client, "rate_limited")
            return None
        user = _check(container, username, password, ui_path)
        if user is None:
            throttle.failed(username, client)
            refused(username, client, "bad_credentials")
            return None
        _audit(container, username, "auth.login", {"key_id": user.key_id} if user.key_id is not None else {})
        return user

    async def login(username: str, password: str) -> bool:
        # argon2 takes tens of milliseconds on purpose: keep it off the event loop. The result is
        # set here, in the request's own context, for SessionTokens to pick up right after.
        user = await asyncio.to_thread(login_sync, username, password, _client.get())
        _signing_in.set(user)
        return user is not None

    return login


def _check(container: Any, username: str, password: str, ui_path: str) -> SessionUser | None:
    if not username or not password:
        return None
    if container.identity.check_password(username, password):
        user = SessionUser(username, None, container.identity.password_stamp(username))
    else:
        key = container.keys.authenticate(password)
        if key is None or key.name != username:
            return None
        user = SessionUser(username, key.key_id, container.identity.password_stamp(username))
    return user if session_principal(container, user, ui_path) is not None else None


def _gradio_app(app: FastAPI, path: str) -> GradioApp:
    mount_path = path.rstrip("/")
    for route in reversed(app.routes):
        if isinstance(route, Mount) and route.path == mount_path and isinstance(route.app, GradioApp):
            return route.app
    raise RuntimeError(f"the Gradio app mounted at {path!r} was not found")


def cookie_sessions(
    gradio_app: GradioApp, container: Any, ui_path: str
) -> Callable[[Request], Principal | None]:
    """Who the UI sign-in cookie of a request acts as now (None: no live session), for REST
    routes the chat links to (a document's original). Same table and checks as the UI itself."""

    def resolve(request: Request) -> Principal | None:
        cookie = gradio_app.cookie_id
        token = request.cookies.get(f"access-token-{cookie}") or request.cookies.get(
            f"access-token-unsecure-{cookie}"
        )
        user = gradio_app.tokens.get(token) if token else None
        return session_principal(container, user, ui_path) if isinstance(user, SessionUser) else None

    return resolve


def _mount(
    app: FastAPI,
    container: Any,
    path: str,
    blocks: gr.Blocks,
    css: str,
    head: str | None,
    throttle: LoginThrottle,
) -> GradioApp:
    """Mount ``blocks`` at ``path`` behind our sign-in, with sessions re-checked on every request."""
    mounted = gr.mount_gradio_app(
        app,
        blocks,
        path=path,
        auth=make_login(container, path, throttle, getattr(app.state, "denied_audit", None)),
        auth_message="Sign in with your user name and password (or an API key of yours). "
        "请使用您的用户名和密码（或您自己的 API 密钥）登录。",
        ssr_mode=False,
        footer_links=[],
        run_history=False,  # Gradio would keep every question and answer in the browser's storage
        css=css,
        head=head,
    )
    # Without this the sessions would never be re-checked: fail at start if Gradio changed.
    gradio_app = _gradio_app(mounted, path)
    if not isinstance(gradio_app.tokens, dict) or gradio_app.tokens:
        raise RuntimeError("unexpected Gradio session table; ui/app.py needs updating")
    if container.redis is not None:
        # Every replica must read the same cookie: Gradio names it after a random id per process.
        gradio_app.cookie_id = hashlib.sha256(f"appliance-ui:{path}".encode()).hexdigest()[:32]
    gradio_app.tokens = SessionTokens(container, path, container.session_store(path))

    @gradio_app.middleware("http")
    async def remember_client(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        token = _client.set(request.client.host if request.client else None)
        try:
            return await call_next(request)
        finally:
            _client.reset(token)

    return gradio_app


def mount_ui(app: FastAPI, container: Any, path: str = "/") -> FastAPI:
    # One throttle for both sign-in forms: the console's must not double a guesser's attempts.
    throttle = LoginThrottle(container.settings.auth.login_rate, storage_uri(container.settings))
    # The console first: a mount at "/" would answer /admin too. It signs in on its own (its own
    # session cookie), and the page refuses everyone but curators and admins.
    admin_path = path.rstrip("/") + ADMIN_PATH
    admin = build_admin(container, LiveSessions(container, admin_path))
    _mount(app, container, admin_path, admin, ADMIN_CSS, None, throttle)
    chat = build_chat(container, LiveSessions(container, path))
    gradio_app = _mount(app, container, path, chat, CHAT_CSS, CHAT_HEAD, throttle)
    # The chat's links to a document's original carry the sign-in cookie, not a key.
    app.state.ui_session = cookie_sessions(gradio_app, container, path)
    return app
