"""UI sign-in on the real Gradio mount: password (argon2) or an API key of that user; the session
cookie comes back SameSite=Strict (and Secure, without the non-Secure twin, when configured);
cross-origin POSTs are refused; failed sign-ins are audited."""

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
from ui.app import mount_ui


def _client(tmp: Path, **auth: Any) -> tuple[TestClient, Container]:
    container = Container(load_settings(data_dir=tmp, auth=auth))
    return TestClient(create_app(container, mount_ui), base_url="http://127.0.0.1:8000"), container


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    client, container = _client(tmp_path_factory.mktemp("ui"))
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
    from ui.app import LiveSessions

    ids = ui["container"].identity
    ids.add_group("ui-team")
    ids.add_user("dora", "employee", password="dora-password")
    sessions = LiveSessions(ui["container"])
    assert sessions.get("dora") is None  # not signed in
    sessions["dora"] = True
    assert sessions.get("dora").groups == ()
    ids.add_member("ui-team", "dora")
    assert sessions.get("dora").groups == ("ui-team",)
    ids.update_user("dora", disabled=True)
    assert sessions.get("dora") is None
