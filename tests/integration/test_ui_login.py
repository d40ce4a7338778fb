"""UI sign-in on the real Gradio mount: password (argon2) or an API key of that user; the session
cookie comes back SameSite=Strict (and Secure, without the non-Secure twin, when configured);
cross-origin POSTs are refused; failed sign-ins are audited. A session signed in with a key is
that key's: its role cap and scopes apply, and revoking or expiring it ends the session."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.container import Container
from appliance.security.auth import issue_key
from appliance.settings import load_settings
from ui.app import LiveSessions, SessionUser, mount_ui


def _client(tmp: Path, **auth: Any) -> tuple[TestClient, Container]:
    container = Container(load_settings(data_dir=tmp, auth=auth))
    return TestClient(create_app(container, mount_ui), base_url="http://127.0.0.1:8000"), container


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # Many sign-ins fail on purpose here, all from one address: the rate limit has its own test.
    client, container = _client(tmp_path_factory.mktemp("ui"), login_rate="1000/minute")
    admin = container.keys.bootstrap_admin()
    assert admin is not None
    container.identity.add_user("alice", "employee", password="alice-password")
    container.identity.add_user("svc", "app", password="service-password")
    try:
        yield {"client": client, "container": container, "admin_key": admin.key}
    finally:
        container.close()


def _login(client: TestClient, user: str, password: str, **headers: str) -> Any:
    client.cookies.clear()
    return client.post("/login", data={"username": user, "password": password}, headers=headers)


def test_password_sign_in_sets_a_strict_cookie(ui: dict[str, Any]) -> None:
    r = _login(ui["client"], "alice", "alice-password")
    assert r.status_code == 200, r.text
    cookies = r.headers.get_list("set-cookie")
    assert cookies and all(c.startswith("access-token") for c in cookies)
    for cookie in cookies:
        attrs = {a.strip().lower() for a in cookie.split(";")}
        assert "samesite=strict" in attrs and "httponly" in attrs and "samesite=none" not in attrs
    assert ui["client"].get("/gradio_api/login_check").status_code == 200
    ui["client"].cookies.clear()
    assert ui["client"].get("/gradio_api/login_check").status_code == 401


def test_wrong_password_app_role_and_other_users_key_are_refused(ui: dict[str, Any]) -> None:
    assert _login(ui["client"], "alice", "wrong-password").status_code == 400
    assert _login(ui["client"], "svc", "service-password").status_code == 400  # apps use the API
    assert _login(ui["client"], "alice", ui["admin_key"]).status_code == 400  # admin's key, not alice's
    records = [json.loads(x) for x in ui["container"].audit.path.read_text().splitlines()]
    assert ("alice", "auth.denied") in [(r["actor"], r["action"]) for r in records]


def test_bootstrap_admin_signs_in_with_the_printed_key(ui: dict[str, Any]) -> None:
    assert _login(ui["client"], "admin", ui["admin_key"]).status_code == 200
    key = issue_key(ui["container"].keys, ui["container"].identity, "alice").key
    assert _login(ui["client"], "alice", key).status_code == 200


def test_disabled_user_cannot_sign_in(ui: dict[str, Any]) -> None:
    ids = ui["container"].identity
    ids.add_user("bob", "employee", password="bob-password")
    ids.update_user("bob", disabled=True)
    assert _login(ui["client"], "bob", "bob-password").status_code == 400


def test_cross_origin_sign_in_is_refused(ui: dict[str, Any]) -> None:
    r = _login(ui["client"], "alice", "alice-password", Origin="https://evil.example")
    assert r.status_code == 403 and not r.headers.get_list("set-cookie")
    same = _login(ui["client"], "alice", "alice-password", Origin="http://127.0.0.1:8000")
    assert same.status_code == 200


def test_secure_cookies_behind_tls(tmp_path: Path) -> None:
    client, container = _client(tmp_path, secure_cookies=True)
    try:
        container.identity.add_user("carol", "employee", password="carol-password")
        r = _login(client, "carol", "carol-password")
        assert r.status_code == 200
        cookies = r.headers.get_list("set-cookie")
        assert len(cookies) == 1 and "unsecure" not in cookies[0]
        attrs = {a.strip().lower() for a in cookies[0].split(";")}
        assert {"secure", "samesite=strict", "httponly"} <= attrs
    finally:
        container.close()


def test_chat_session_follows_the_user_as_stored_now(ui: dict[str, Any]) -> None:
    ids = ui["container"].identity
    ids.add_group("ui-team")
    ids.add_user("dora", "employee", password="dora-password")
    sessions = LiveSessions(ui["container"])
    assert sessions.get("dora") is None  # a bare name is no session: only Gradio's table makes one
    dora = SessionUser("dora")
    assert sessions.get(dora).groups == ()
    ids.add_member("ui-team", "dora")
    assert sessions.get(dora).groups == ("ui-team",)
    ids.update_user("dora", disabled=True)
    assert sessions.get(dora) is None


def _session_user(client: TestClient) -> SessionUser:
    """The user name Gradio hands the chat for this client's session cookie."""
    from ui.app import _gradio_app

    gradio = _gradio_app(client.app, "/")  # type: ignore[arg-type]
    token = next(v for k, v in client.cookies.items() if k.startswith("access-token-unsecure"))
    user = gradio.tokens.get(token)
    assert isinstance(user, SessionUser)
    return user


def _age_stored_session(client: TestClient, seconds: float) -> None:
    """Move the sign-in time of the session this client's cookie names ``seconds`` back."""
    from dataclasses import replace

    from ui.app import _gradio_app

    tokens = _gradio_app(client.app, "/").tokens  # type: ignore[arg-type]
    token = next(v for k, v in client.cookies.items() if k.startswith("access-token-unsecure"))
    ref = tokens._ref(token)
    record = tokens.store.get(ref)
    tokens.store.put(ref, replace(record, signed_in_at=record.signed_in_at - seconds), 3600)


def test_key_session_carries_the_keys_scopes_and_role_cap(ui: dict[str, Any]) -> None:
    c, container = ui["client"], ui["container"]
    ids = container.identity
    ids.add_group("editors")
    ids.add_user("erik", "curator", ["editors"], password="erik-password")
    key = issue_key(container.keys, ids, "erik", role="employee", collections=["default"])
    assert _login(c, "erik", key.key).status_code == 200
    principal = LiveSessions(container).get(_session_user(c))
    assert (principal.role, principal.key_id, principal.collections) == ("employee", key.id, ("default",))
    assert principal.groups == ("editors",)
    assert _login(c, "erik", "erik-password").status_code == 200  # a password session: full rights
    principal = LiveSessions(container).get(_session_user(c))
    assert (principal.role, principal.key_id, principal.collections) == ("curator", None, None)
    # Keys whose scopes leave out the UI (its routes, the default collection the chat asks) or
    # whose role is `app` do not sign in at all.
    for scoped in (
        issue_key(container.keys, ids, "erik", routes=["/v1"]),
        issue_key(container.keys, ids, "erik", collections=["other"]),
        issue_key(container.keys, ids, "erik", role="app"),
    ):
        assert _login(c, "erik", scoped.key).status_code == 400


def test_revoking_or_expiring_the_key_ends_the_session(ui: dict[str, Any]) -> None:
    c, container = ui["client"], ui["container"]
    ids = container.identity
    ids.add_user("fay", "employee", password="fay-password")
    for end in ("revoke", "expire"):
        key = issue_key(container.keys, ids, "fay")
        assert _login(c, "fay", key.key).status_code == 200
        user = _session_user(c)
        assert c.get("/gradio_api/login_check").status_code == 200
        if end == "revoke":
            container.keys.revoke(key.id)
        else:
            with container.engine.begin() as conn:
                conn.exec_driver_sql(
                    f"update api_keys set expires_at='2000-01-01 00:00:00' where id={key.id}"
                )
        assert LiveSessions(container).get(user) is None  # the next chat message is refused
        assert c.get("/gradio_api/login_check").status_code == 401  # and the session is gone
        assert _login(c, "fay", key.key).status_code == 400
    # A password session of the same user is not a key's and lives on.
    assert _login(c, "fay", "fay-password").status_code == 200
    container.keys.revoke_user("fay")
    assert c.get("/gradio_api/login_check").status_code == 200
    records = [json.loads(x) for x in container.audit.path.read_text().splitlines()]
    assert ("fay", "auth.session_ended") in [(r["actor"], r["action"]) for r in records]


def test_a_password_change_ends_the_users_sessions(ui: dict[str, Any]) -> None:
    c, container = ui["client"], ui["container"]
    ids = container.identity
    ids.add_user("gus", "employee", password="gus-password-1")
    key = issue_key(container.keys, ids, "gus")
    for secret in ("gus-password-1", key.key):
        assert _login(c, "gus", secret).status_code == 200
        user = _session_user(c)
        assert LiveSessions(container).get(user) is not None
        ids.update_user("gus", password=f"changed-{secret[:6]}-x")
        assert LiveSessions(container).get(user) is None
        assert c.get("/gradio_api/login_check").status_code == 401
        secret_now = f"changed-{secret[:6]}-x"
        if secret == "gus-password-1":
            assert _login(c, "gus", "gus-password-1").status_code == 400
            assert _login(c, "gus", secret_now).status_code == 200
    # The key itself still signs in (it was not revoked): only the sessions opened before ended.
    assert _login(c, "gus", key.key).status_code == 200


def test_password_sessions_expire(ui: dict[str, Any]) -> None:
    c, container = ui["client"], ui["container"]
    container.identity.add_user("hal", "employee", password="hal-password-1")
    assert _login(c, "hal", "hal-password-1").status_code == 200
    user = _session_user(c)
    hours = container.settings.auth.session_hours
    assert hours == 12.0
    user.signed_in_at -= hours * 3600 - 60  # a minute before it expires: still signed in
    assert LiveSessions(container).get(user) is not None
    user.signed_in_at -= 120  # a minute after
    assert LiveSessions(container).get(user) is None
    _age_stored_session(c, hours * 3600 + 60)  # the stored session the cookie names, too
    assert c.get("/gradio_api/login_check").status_code == 401


def test_api_documentation_opens_for_a_ui_session(ui: dict[str, Any]) -> None:
    c = ui["client"]
    c.cookies.clear()
    assert c.get("/openapi.json").status_code == 401
    assert _login(c, "alice", "alice-password").status_code == 200
    assert c.get("/openapi.json").json()["paths"]
    assert c.get("/docs").status_code == 200


def test_cookies_are_secure_over_tls_or_through_a_trusted_proxy(tmp_path: Path) -> None:
    """Secure (and no non-Secure twin) whenever the browser came over TLS: directly, or through a
    proxy in auth.trusted_proxies that says X-Forwarded-Proto https; anyone else saying so is
    ignored."""
    container = Container(load_settings(data_dir=tmp_path, auth={"trusted_proxies": ["10.0.0.0/8"]}))
    try:
        app = create_app(container, mount_ui)
        container.identity.add_user("ivy", "employee", password="ivy-password-1")
        plain = "http://127.0.0.1:8000"
        cases = (
            (TestClient(app, base_url="https://127.0.0.1:8000"), {}, True),
            (
                TestClient(app, base_url=plain, client=("10.1.2.3", 5000)),
                {"X-Forwarded-Proto": "https"},
                True,
            ),
            (TestClient(app, base_url=plain, client=("10.1.2.3", 5000)), {}, False),
            (
                TestClient(app, base_url=plain, client=("192.0.2.7", 5000)),
                {"X-Forwarded-Proto": "https"},
                False,
            ),
        )
        for client, headers, secure in cases:
            r = _login(client, "ivy", "ivy-password-1", **headers)
            assert r.status_code == 200, r.text
            cookies = r.headers.get_list("set-cookie")
            flags = [{a.strip().lower() for a in c.split(";")} for c in cookies]
            if secure:
                assert len(cookies) == 1 and "unsecure" not in cookies[0], (headers, cookies)
                assert "secure" in flags[0]
            else:
                assert any("unsecure" in c for c in cookies), (headers, cookies)
                assert all("secure" not in f for f in flags), (headers, cookies)
    finally:
        container.close()


def test_failed_sign_ins_are_rate_limited_per_user_and_address(tmp_path: Path) -> None:
    client, container = _client(tmp_path, login_rate="3/minute")
    try:
        container.identity.add_user("kim", "employee", password="kim-password-1")
        container.identity.add_user("lee", "employee", password="lee-password-1")
        for _ in range(3):
            assert _login(client, "kim", "wrong-password").status_code == 400
        # Past the limit even the right password is refused, from anywhere, for a while.
        assert _login(client, "kim", "kim-password-1").status_code == 400
        elsewhere = TestClient(client.app, base_url="http://127.0.0.1:8000", client=("192.0.2.9", 4000))
        assert _login(elsewhere, "kim", "kim-password-1").status_code == 400
        # Another user from another address signs in; from the flooding address nobody does.
        assert _login(elsewhere, "lee", "lee-password-1").status_code == 200
        assert _login(client, "lee", "lee-password-1").status_code == 400
        records = [json.loads(x) for x in container.audit.path.read_text().splitlines()]
        reasons = [r["data"].get("reason") for r in records if r["action"] == "auth.denied"]
        assert reasons.count("bad_credentials") == 3 and reasons.count("rate_limited") == 3
    finally:
        container.close()


def test_sign_out_ends_every_session_of_the_user_and_only_theirs(ui: dict[str, Any]) -> None:
    c, container = ui["client"], ui["container"]
    container.identity.add_user("ivy", "employee", password="ivy-password-1")
    container.identity.add_user("jon", "employee", password="jon-password-1")
    sessions = {}
    for name in ("ivy", "ivy2", "jon"):
        user = name.rstrip("2")
        assert _login(c, user, f"{user}-password-1").status_code == 200
        sessions[name] = dict(c.cookies)
    c.cookies.clear()
    assert c.get("/logout", cookies=sessions["ivy"], follow_redirects=False).status_code in (302, 307)
    for name, signed_in in (("ivy", False), ("ivy2", False), ("jon", True)):
        c.cookies.clear()
        status = c.get("/gradio_api/login_check", cookies=sessions[name]).status_code
        assert (status == 200) is signed_in, name
