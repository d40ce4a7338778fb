"""Auth sweep over every route in the OpenAPI schema, generated at test time so routes added by
other areas are covered: unauthenticated -> 401 (health excepted), a key scoped away from the
route -> 403, an employee on an admin route -> 403. Also: identity REST, own-keys rules, audit of
admin actions and auth failures. No lifespan: nothing heavy is loaded, auth fails first."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import insert

from appliance.api.app import create_app
from appliance.container import Container
from appliance.db import collections as collections_table
from appliance.db import now
from appliance.domain import Principal
from appliance.security.auth import issue_key
from appliance.settings import load_settings

PUBLIC = {"/healthz", "/readyz"}
ADMIN_KEY = "kb-sweep-admin-0123456789"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("sweep")
    # The sweep is one flood of refusals from one address: the audit bound has its own test.
    unbounded = {"denied_audit_per_client": "100000/minute", "denied_audit_total": "100000/minute"}
    container = Container(load_settings(data_dir=data_dir, auth={"admin_key": ADMIN_KEY, **unbounded}))
    container.keys.bootstrap_admin()
    container.identity.add_group("staff")
    container.identity.add_user("emp", "employee", ["staff"])
    container.identity.add_user("emp2", "employee", ["staff"])
    container.identity.add_user("svc", "app")
    container.identity.add_user("cur", "curator", ["staff"])
    # Things outside the `kb` scope whose names must never reach a key scoped to `kb`.
    container.identity.add_group("outgroup")
    container.identity.add_user("outsider", "employee", ["outgroup"], "outsider-password")
    with container.engine.begin() as conn:  # a collection row, without loading the embedder
        conn.execute(
            insert(collections_table).values(
                name="othercol", default_acl=[], description="", created_at=now(), owners=["outgroup"]
            )
        )
        conn.execute(
            insert(collections_table).values(
                name="staffcol", default_acl=[], description="", created_at=now(), owners=["staff"]
            )
        )
    container.store.ensure_collection("othercol", 384)  # a shard too: the chat route looks there
    app = create_app(container)
    keys = {
        "employee": issue_key(container.keys, container.identity, "emp").key,
        "employee2": issue_key(container.keys, container.identity, "emp2").key,
        "scoped_away": issue_key(container.keys, container.identity, "svc", routes=["/nowhere"]).key,
        "curator_in_kb": issue_key(container.keys, container.identity, "cur", collections=["kb"]).key,
        "admin_in_kb": issue_key(container.keys, container.identity, "admin", collections=["kb"]).key,
        "outsider": issue_key(container.keys, container.identity, "outsider").key,
    }
    container.metering.record_usage(Principal("outsider", "employee", ("outgroup",)), 11, 3)
    client = TestClient(app, raise_server_exceptions=False)  # no `with`: no lifespan, no models
    try:
        yield {"client": client, "app": app, "container": container, "keys": keys}
    finally:
        container.close()


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):  # FastAPI >= 0.16x keeps included routers nested
            yield from _api_routes(list(r.original_router.routes))
        elif hasattr(r, "routes"):
            yield from _api_routes(list(r.routes))


def _routes(app: Any) -> list[tuple[str, str, APIRoute | None]]:
    """(method, path, route) for every operation in the OpenAPI schema; the route object (found
    by operationId, whatever the router nesting) tells which role dependencies guard it."""
    by_id = {r.unique_id: r for r in _api_routes(list(app.routes))}
    out = []
    for path, item in app.openapi()["paths"].items():
        for method, op in item.items():
            out.append((method.upper(), path, by_id.get(op.get("operationId", ""))))
    return out


def _url(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def _calls(route: APIRoute | None) -> set[str]:
    names: set[str] = set()
    todo = list(route.dependant.dependencies) if route else []
    while todo:
        dep = todo.pop()
        names.add(getattr(dep.call, "__name__", ""))
        todo.extend(dep.dependencies)
    return names


def _send(client: TestClient, method: str, path: str, key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = None if method in ("GET", "DELETE", "HEAD") else json.dumps({})
    if body is not None:
        headers["Content-Type"] = "application/json"
    return client.request(method, _url(path), headers=headers, content=body)


def test_schema_has_the_routes_we_expect(env: dict[str, Any]) -> None:
    paths = {p for _, p, _ in _routes(env["app"])}
    for expected in ("/api/v1/users", "/api/v1/groups", "/api/v1/keys", "/api/v1/usage", "/api/v1/search"):
        assert expected in paths


def test_every_route_needs_authentication(env: dict[str, Any]) -> None:
    wrong = []
    for method, path, _ in _routes(env["app"]):
        if path in PUBLIC:
            continue
        for key in (None, "kb-not-a-real-key"):
            r = _send(env["client"], method, path, key)
            if r.status_code != 401 or r.json().get("error", {}).get("code") != "unauthenticated":
                wrong.append((method, path, key, r.status_code, r.text[:120]))
    assert not wrong, wrong


def test_key_scoped_to_other_routes_gets_403_everywhere(env: dict[str, Any]) -> None:
    wrong = []
    for method, path, _ in _routes(env["app"]):
        if path in PUBLIC:
            continue
        r = _send(env["client"], method, path, env["keys"]["scoped_away"])
        if r.status_code != 403:
            wrong.append((method, path, r.status_code, r.text[:120]))
    assert not wrong, wrong


def test_employee_gets_403_on_every_admin_or_curator_route(env: dict[str, Any]) -> None:
    guarded = [
        (m, p) for m, p, route in _routes(env["app"]) if _calls(route) & {"require_admin", "require_curator"}
    ]
    assert all(route is not None for _, _, route in _routes(env["app"]))
    assert ("POST", "/api/v1/users") in guarded and ("GET", "/api/v1/audit/verify") in guarded
    # Every write and every job or source route needs at least the curator role.
    for op in (
        ("POST", "/api/v1/collections"),
        ("DELETE", "/api/v1/collections/{name}"),
        ("PATCH", "/api/v1/collections/{name}"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/{job_id}"),
        ("POST", "/api/v1/jobs/{job_id}/cancel"),
        ("POST", "/api/v1/sources"),
        ("GET", "/api/v1/sources"),
        ("DELETE", "/api/v1/sources/{source_id}"),
        ("PATCH", "/api/v1/sources/{source_id}"),
        ("POST", "/api/v1/sources/{source_id}/sync"),
        ("POST", "/api/v1/documents"),
        ("DELETE", "/api/v1/documents/{doc_id}"),
        ("POST", "/api/v1/documents/{doc_id}/reindex"),
    ):
        assert op in guarded, op
    wrong = []
    for method, path in guarded:
        r = _send(env["client"], method, path, env["keys"]["employee"])
        if r.status_code != 403 or r.json()["error"]["code"] != "forbidden":
            wrong.append((method, path, r.status_code, r.text[:120]))
    assert not wrong, wrong


def test_collection_scoped_key_is_checked_on_every_route_naming_one(env: dict[str, Any]) -> None:
    """Not only on the metered routes: a key scoped to `kb` that names another collection in a
    query, a JSON body or an upload form is refused before anything runs."""
    c: TestClient = env["client"]
    headers = {"Authorization": f"Bearer {env['keys']['curator_in_kb']}"}
    refused = [
        c.get("/api/v1/documents", params={"collection": "other"}, headers=headers),
        c.post("/api/v1/jobs", json={"sources": ["/srv/x"], "collection": "other"}, headers=headers),
        c.post("/api/v1/sources", json={"spec": "/srv/x", "collection": "other"}, headers=headers),
        c.post("/api/v1/conversations", json={"collection": "other"}, headers=headers),
        c.post(
            "/api/v1/documents",
            files={"file": ("a.md", b"# A\n\ntext\n", "text/markdown")},
            data={"collection": "other"},
            headers=headers,
        ),
        # Named in the path: the collections service checks it.
        c.delete("/api/v1/collections/other", headers=headers),
    ]
    wrong = [
        (r.request.method, str(r.request.url), r.status_code, r.text[:120])
        for r in refused
        if r.status_code != 403
    ]
    assert not wrong, wrong
    assert all("may not use collection 'other'" in r.json()["error"]["message"] for r in refused)
    # Writes naming no collection mean the default one, which this key may not use either.
    r = c.post("/api/v1/jobs", json={"sources": ["/srv/x"]}, headers=headers)
    assert r.status_code == 403 and "collection 'default'" in r.json()["error"]["message"]
    # Reads naming none list what the key may see instead of being refused.
    r = c.get("/api/v1/documents", headers=headers)
    assert r.status_code == 200 and r.json()["items"] == []
    assert c.get("/api/v1/collections", headers=headers).json()["items"] == []


def test_collection_scoped_admin_key_gets_no_appliance_wide_route(env: dict[str, Any]) -> None:
    """An admin key scoped to `kb` keeps the admin role inside `kb` only: every admin-only route
    (users, keys, quotas, audit, ledger checks, feedback, ingest) acts on the whole appliance, and
    one of them could mint an unscoped key."""
    c: TestClient = env["client"]
    headers = {"Authorization": f"Bearer {env['keys']['admin_in_kb']}"}
    for method, path, body in (
        ("POST", "/api/v1/keys", {"user": "admin"}),
        ("GET", "/api/v1/users", None),
        ("GET", "/api/v1/quotas", None),
        ("GET", "/api/v1/audit/export", None),
        ("GET", "/api/v1/audit/verify", None),
        ("GET", "/api/v1/ingest/verify", None),
        ("GET", "/api/v1/feedback", None),
        ("POST", "/api/v1/ingest", {"sources": ["/srv/x"], "collection": "kb"}),
    ):
        r = c.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
        assert "not scoped to collections" in r.json()["error"]["message"], (method, path)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert c.get("/api/v1/users", headers=admin).status_code == 200


OUTSIDE = ("outsider", "outgroup", "othercol")


def _outside_url(path: str, outsider_key_id: int) -> str:
    """Each path parameter filled with something of another user or collection."""
    values = {"key_id": str(outsider_key_id), "kind": "user", "member": "outsider"}
    if path.startswith("/api/v1/collections/"):
        values["name"] = "othercol"
    elif path.startswith("/api/v1/groups/"):
        values["name"] = "outgroup"
    else:
        values["name"] = "outsider"
    return re.sub(r"\{([^}]+)\}", lambda m: values.get(m.group(1), "1"), path)


def test_scoped_admin_key_sweep_every_route(env: dict[str, Any]) -> None:
    """Every route in the OpenAPI document, called with an admin key scoped to `kb` and pointed at
    another user's or collection's things: the admin-only routes answer 403, and no other route
    shows or changes anything outside `kb` (other users, their keys and usage, other collections)."""
    c: TestClient = env["client"]
    container = env["container"]
    headers = {"Authorization": f"Bearer {env['keys']['admin_in_kb']}"}
    outsider_key = next(k for k in container.keys.list("outsider") if k["active"])
    admin_only, leaks = [], []
    for method, path, route in _routes(env["app"]):
        if path in PUBLIC:
            continue
        body = None if method in ("GET", "DELETE", "HEAD") else {}
        if (method, path) == ("PATCH", "/api/v1/users/{name}"):
            body = {"password": "taken-over-1", "role": "admin", "disabled": False}
        r = c.request(method, _outside_url(path, outsider_key["id"]), json=body, headers=headers)
        if "require_admin" in _calls(route):
            if r.status_code != 403:
                admin_only.append((method, path, r.status_code, r.text[:120]))
        elif r.status_code < 400 and any(name in r.text for name in OUTSIDE):
            leaks.append((method, path, r.status_code, r.text[:200]))
    assert not admin_only, admin_only
    assert not leaks, leaks
    # Nothing of the outsider changed either.
    assert container.identity.check_password("outsider", "outsider-password")
    assert container.identity.lookup("outsider") == ("employee", False)
    assert any(k["active"] for k in container.keys.list("outsider"))
    # The same key still works as an ordinary user of its own account.
    mine = c.get("/api/v1/keys", headers=headers).json()["data"]
    assert mine and {k["user"] for k in mine} == {"admin"}


def test_health_is_public(env: dict[str, Any]) -> None:
    assert env["client"].get("/healthz").status_code == 200


def test_identity_rest_and_own_keys(env: dict[str, Any]) -> None:
    c: TestClient = env["client"]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    r = c.post("/api/v1/groups", json={"name": "sales"}, headers=admin)
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/groups", json={"name": "emea-sales", "parent": "sales"}, headers=admin)
    assert r.status_code == 201
    r = c.post(
        "/api/v1/users",
        json={"name": "zoe", "groups": ["emea-sales"], "password": "longenough"},
        headers=admin,
    )
    assert r.status_code == 201 and r.json()["all_groups"] == ["emea-sales", "sales"], r.text
    assert c.post("/api/v1/users", json={"name": "zoe"}, headers=admin).status_code == 409
    r = c.post("/api/v1/groups/emea-sales/members", json={"member": "sales", "kind": "group"}, headers=admin)
    assert r.status_code == 409 and "cycle" in r.json()["error"]["message"]
    issued = c.post("/api/v1/keys", json={"user": "zoe", "expires_days": 30}, headers=admin).json()
    assert issued["key"].startswith("kb-") and issued["expires_at"]
    zoe = {"Authorization": f"Bearer {issued['key']}"}
    mine = c.get("/api/v1/keys", headers=zoe).json()["data"]
    assert [k["id"] for k in mine] == [issued["id"]] and "key" not in mine[0]
    # Another user's key id answers 404, not 403.
    other = c.get("/api/v1/keys", headers={"Authorization": f"Bearer {env['keys']['employee2']}"}).json()[
        "data"
    ]
    r = c.delete(f"/api/v1/keys/{other[0]['id']}", headers=zoe)
    assert r.status_code == 404
    # Users: non-admins see and change only themselves (their password), others answer 404.
    assert c.get("/api/v1/users/zoe", headers=zoe).json()["all_groups"] == ["emea-sales", "sales"]
    assert c.get("/api/v1/users/emp", headers=zoe).status_code == 404
    assert c.get("/api/v1/users/nobody-at-all", headers=zoe).status_code == 404
    assert c.patch("/api/v1/users/emp", json={"password": "x" * 12}, headers=zoe).status_code == 404
    assert c.patch("/api/v1/users/zoe", json={"role": "admin"}, headers=zoe).status_code == 403
    # A password change needs the current password, whatever key asks.
    assert c.patch("/api/v1/users/zoe", json={"password": "new-password"}, headers=zoe).status_code == 403
    r = c.patch(
        "/api/v1/users/zoe", json={"password": "new-password", "current_password": "wrong-one"}, headers=zoe
    )
    assert r.status_code == 403
    assert env["container"].identity.check_password("zoe", "longenough")
    r = c.patch(
        "/api/v1/users/zoe", json={"password": "new-password", "current_password": "longenough"}, headers=zoe
    )
    assert r.status_code == 200
    assert env["container"].identity.check_password("zoe", "new-password")
    me = c.get("/api/v1/me", headers=zoe).json()
    assert (me["name"], me["role"], me["groups"], me["key_id"]) == (
        "zoe",
        "employee",
        ["emea-sales", "sales"],
        issued["id"],
    )
    assert c.get("/api/v1/users", headers=zoe).status_code == 403
    assert c.delete(f"/api/v1/keys/{issued['id']}", headers=zoe).status_code == 200
    assert c.get("/api/v1/keys", headers=zoe).status_code == 401  # revoked: next request fails
    # Disabling a user revokes their keys at once.
    k2 = c.post("/api/v1/keys", json={"user": "zoe"}, headers=admin).json()["key"]
    assert c.get("/api/v1/keys", headers={"Authorization": f"Bearer {k2}"}).status_code == 200
    assert c.delete("/api/v1/users/zoe", headers=admin).json()["disabled"] is True
    assert c.get("/api/v1/keys", headers={"Authorization": f"Bearer {k2}"}).status_code == 401


def test_admin_actions_and_auth_failures_are_audited(env: dict[str, Any]) -> None:
    c: TestClient = env["client"]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert c.post("/api/v1/groups", json={"name": "audited-group"}, headers=admin).status_code == 201
    assert c.get("/api/v1/users", headers={"Authorization": "Bearer kb-wrong"}).status_code == 401
    assert (
        c.get("/api/v1/users", headers={"Authorization": f"Bearer {env['keys']['employee']}"}).status_code
        == 403
    )
    records = [json.loads(line) for line in Path(env["container"].audit.path).read_text().splitlines()]
    actions = [(r["actor"], r["action"], r["target"], r["data"].get("status")) for r in records]
    assert ("admin", "POST /api/v1/groups", "/api/v1/groups", 201) in actions
    created = [r for r in records if r["action"] == "POST /api/v1/keys"]
    assert created and created[0]["data"]["user"] == "zoe" and "key" not in created[0]["data"]
    assert not any(r["data"].get("password") for r in records)
    assert ("anonymous", "auth.denied", "/api/v1/users", 401) in actions
    assert ("emp", "auth.denied", "/api/v1/users", 403) in actions
    assert env["container"].audit.verify().ok


def test_cross_origin_ui_post_is_refused(env: dict[str, Any]) -> None:
    c: TestClient = env["client"]
    r = c.post("/login", data={"username": "a", "password": "b"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_usage_report_shows_others_only_to_admins(env: dict[str, Any]) -> None:
    from appliance.domain import Principal

    c: TestClient = env["client"]
    metering = env["container"].metering
    metering.record_usage(Principal("emp", "employee", ("staff",)), 40, 2)
    metering.record_usage(Principal("emp2", "employee", ("staff",)), 7, 1)
    own = c.get("/api/v1/usage", headers={"Authorization": f"Bearer {env['keys']['employee']}"}).json()[
        "data"
    ]
    assert {r["subject"] for r in own} == {"user:emp"} and own[0]["total_tokens"] == 42
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    everything = c.get("/api/v1/usage", headers=admin).json()["data"]
    assert {"user:emp", "user:emp2", "group:staff"} <= {r["subject"] for r in everything}
    text = c.get("/api/v1/usage", params={"format": "csv", "kind": "group"}, headers=admin)
    assert text.headers["content-type"].startswith("text/csv")
    assert text.text.splitlines()[0].startswith("day,subject,") and "group:staff" in text.text
    assert "user:emp" not in text.text


def test_audit_export_over_rest_verifies(env: dict[str, Any], tmp_path: Path) -> None:
    from appliance.audit import verify_file

    r = env["client"].get("/api/v1/audit/export", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200
    out = tmp_path / "export.jsonl"
    out.write_text(r.text)
    result = verify_file(out, require_trailer=True)
    assert result.ok and result.records >= 3


def test_every_admin_list_is_paginated(env: dict[str, Any]) -> None:
    c: TestClient = env["client"]
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    for name in ("g1", "g2", "g3"):
        c.post("/api/v1/groups", json={"name": f"page-{name}"}, headers=admin)
    c.put("/api/v1/quotas", json={"subject": "user:emp", "tokens_per_day": 1000}, headers=admin)
    c.put("/api/v1/quotas", json={"subject": "user:emp2", "tokens_per_day": 1000}, headers=admin)
    for path, key in (
        ("/api/v1/users", "data"),
        ("/api/v1/groups", "data"),
        ("/api/v1/keys", "data"),
        ("/api/v1/quotas", "data"),
        ("/api/v1/sources", "items"),
        ("/api/v1/jobs", "items"),
        ("/api/v1/documents", "items"),
        ("/api/v1/collections", "items"),
    ):
        whole = c.get(path, params={"limit": 200}, headers=admin)
        assert whole.status_code == 200, (path, whole.text)
        body = whole.json()
        assert body["total"] == len(body[key]) and (body["limit"], body["offset"]) == (200, 0), path
        if body["total"] >= 2:
            second = c.get(path, params={"limit": 1, "offset": 1}, headers=admin).json()
            assert second[key] == body[key][1:2] and second["total"] == body["total"], path
        assert c.get(path, params={"limit": 0}, headers=admin).status_code == 422, path


def test_collection_scope_is_checked_where_the_search_runs(env: dict[str, Any]) -> None:
    """The search and answer services check a scoped key against the collection they search, so a
    request the API's dependency reads differently (here: a JSON body sent with no content type,
    which FastAPI still parses) or a caller that is not the API cannot reach another collection."""
    import asyncio

    from appliance.domain import Forbidden

    c: TestClient = env["client"]
    container = env["container"]
    headers = {"Authorization": f"Bearer {env['keys']['curator_in_kb']}"}
    for path, body in (
        ("/api/v1/search", {"query": "q", "collection": "other"}),
        ("/api/v1/ask", {"question": "q", "collection": "other"}),
    ):
        r = c.post(path, content=json.dumps(body).encode(), headers=headers)
        assert r.status_code == 403, (path, r.status_code, r.text[:200])
        assert "may not use collection 'other'" in r.json()["error"]["message"]
    scoped = Principal("cur", "curator", ("staff",), key_id=1, collections=("kb",))
    with pytest.raises(Forbidden, match="collection 'other'"):
        container.search.search("q", scoped, "other")
    with pytest.raises(Forbidden, match="collection 'default'"):
        container.search.search_and_audit("q", scoped)
    with pytest.raises(Forbidden, match="collection 'other'"):
        asyncio.run(container.rag.ask("q", scoped, collection="other"))
    with pytest.raises(Forbidden, match="collection 'default'"):
        asyncio.run(container.rag.ask("q", scoped))


def test_no_existence_oracles(env: dict[str, Any]) -> None:
    """A collection the caller may not see answers like a name that does not exist: as an OpenAI
    `model` (unknown model, or the scoped key's default collection) and when creating it (the same
    answer as for a taken name the caller sees, which says nothing of what holds it)."""
    c: TestClient = env["client"]

    def chat(who: str, model: str) -> tuple[int, str]:
        r = c.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
            headers={"Authorization": f"Bearer {env['keys'][who]}"},
        )
        return r.status_code, r.json()["error"]["message"].replace(model, "NAME")

    for who in ("curator_in_kb", "employee"):
        assert chat(who, "othercol") == chat(who, "no-such-collection"), who
    assert chat("employee", "othercol")[0] == 400
    cur = {
        "Authorization": f"Bearer {issue_key(env['container'].keys, env['container'].identity, 'cur').key}"
    }
    answers = []
    for name in ("othercol", "staffcol"):  # hidden from `cur` / curated by `cur`
        r = c.post("/api/v1/collections", json={"name": name, "owners": ["staff"]}, headers=cur)
        answers.append((r.status_code, r.json()["error"]["message"].replace(name, "NAME")))
    assert answers[0] == answers[1] and answers[0][0] == 409, answers
    assert "exist" not in answers[0][1]


def test_passwords_and_limited_keys(env: dict[str, Any]) -> None:
    """A key, however limited, turns into its user's password only with the current password (an
    unscoped admin sets another user's without it); a limited key (scoped, or with a lower role
    than its user) neither lists nor revokes its owner's other keys."""
    c: TestClient = env["client"]
    container = env["container"]
    container.identity.add_user("pam", "curator", ["staff"], "pam-password-1")
    full = issue_key(container.keys, container.identity, "pam")
    limited = {
        "scoped": issue_key(container.keys, container.identity, "pam", collections=["kb"]),
        "routes": issue_key(container.keys, container.identity, "pam", routes=["/api/v1"]),
        "capped": issue_key(container.keys, container.identity, "pam", role="employee"),
    }

    def h(key: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {key.key}"}

    for name, key in limited.items():
        r = c.patch("/api/v1/users/pam", json={"password": "taken-over-1"}, headers=h(key))
        assert r.status_code == 403, (name, r.text)
        mine = c.get("/api/v1/keys", headers=h(key)).json()["data"]
        assert [k["id"] for k in mine] == [key.id], name
        assert c.delete(f"/api/v1/keys/{full.id}", headers=h(key)).status_code == 404, name
    assert container.identity.check_password("pam", "pam-password-1")
    # The full key sees and manages them all; the limited ones may revoke themselves.
    everything = {k["id"] for k in c.get("/api/v1/keys", headers=h(full)).json()["data"]}
    assert everything == {full.id, *(k.id for k in limited.values())}
    assert c.delete(f"/api/v1/keys/{limited['capped'].id}", headers=h(limited["capped"])).status_code == 200
    assert c.delete(f"/api/v1/keys/{limited['routes'].id}", headers=h(full)).status_code == 200
    # An unscoped admin sets another user's password without it; its own needs the current one, and
    # a scoped admin key is no admin here.
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    assert c.patch("/api/v1/users/pam", json={"password": "reset-by-admin"}, headers=admin).status_code == 200
    assert container.identity.check_password("pam", "reset-by-admin")
    scoped_admin = {"Authorization": f"Bearer {env['keys']['admin_in_kb']}"}
    r = c.patch("/api/v1/users/admin", json={"password": "taken-over-1"}, headers=scoped_admin)
    assert r.status_code == 403
    assert not container.identity.check_password("admin", "taken-over-1")


@pytest.mark.parametrize("mode", ["auth", "off", "public"])
def test_api_documentation_needs_a_signed_in_caller(tmp_path: Path, mode: str) -> None:
    """/docs, /redoc and /openapi.json are the map of every route: by default (server.docs: auth)
    only a caller with a key (or a UI session, see test_ui_login) reads them; `off` serves none,
    `public` (development) serves them to anyone."""
    settings = {"data_dir": tmp_path, "auth": {"admin_key": ADMIN_KEY}}
    if mode != "auth":
        settings["server"] = {"docs": mode}
    else:
        assert load_settings(data_dir=tmp_path).server.docs == "auth"  # the default
    container = Container(load_settings(**settings))
    try:
        c = TestClient(create_app(container), raise_server_exceptions=False)
        employee = issue_key(container.keys, container.identity, _user(container, "reader")).key
        for path in ("/openapi.json", "/docs", "/redoc"):
            anonymous = c.get(path)
            signed_in = c.get(path, headers={"Authorization": f"Bearer {employee}"})
            wrong = c.get(path, headers={"Authorization": "Bearer kb-not-a-key"})
            if mode == "public":
                assert anonymous.status_code == 200, path
            elif mode == "off":
                assert (anonymous.status_code, signed_in.status_code) == (404, 404), path
            else:
                assert (anonymous.status_code, wrong.status_code) == (401, 401), path
                assert signed_in.status_code == 200, path
        if mode == "auth":
            spec = c.get("/openapi.json", headers={"Authorization": f"Bearer {employee}"}).json()
            assert "/api/v1/users" in spec["paths"]
    finally:
        container.close()


def _user(container: Container, name: str) -> str:
    container.identity.add_user(name, "employee")
    return name


def test_audit_of_refusals_is_bounded(tmp_path: Path) -> None:
    """A flood of bad keys is refused every time, but writes at most `denied_audit_per_client`
    records per address and `denied_audit_total` in all; the next record written says how many
    were left out."""
    limits = {"denied_audit_per_client": "5/minute", "denied_audit_total": "8/minute"}
    container = Container(load_settings(data_dir=tmp_path, auth={"admin_key": ADMIN_KEY, **limits}))
    try:
        app = create_app(container)
        flood = TestClient(app, raise_server_exceptions=False)
        other = TestClient(app, raise_server_exceptions=False, client=("192.0.2.1", 4000))
        bad = {"Authorization": "Bearer kb-wrong"}
        assert all(flood.get("/api/v1/users", headers=bad).status_code == 401 for _ in range(20))
        assert all(other.get("/api/v1/users", headers=bad).status_code == 401 for _ in range(20))
        records = [json.loads(x) for x in container.audit.path.read_text().splitlines()]
        denied = [r for r in records if r["action"] == "auth.denied"]
        assert len(denied) == 8, len(denied)
        assert [r["data"]["client"] for r in denied].count("testclient") == 5
        assert denied[5]["data"]["client"] == "192.0.2.1" and denied[5]["data"]["suppressed"] == 15
        assert container.audit.verify().ok
    finally:
        container.close()
