"""Console actions on the real services: they are allowed and refused exactly as their REST routes
(the same service methods), and audited with the same record the REST middleware writes, plus
``via: ui``; a refusal is audited as ``auth.denied``; an employee's session does nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from appliance.container import Container
from appliance.domain import Forbidden, NotFound
from appliance.settings import load_settings
from ui.admin.audit import audit_records
from ui.admin.common import Console, Refused
from ui.app import LiveSessions, SessionUser


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Console, Path]]:
    tmp = tmp_path_factory.mktemp("console")
    folder = tmp / "handbook"
    folder.mkdir()
    (folder / "parking.md").write_text("# Parking\n\nThe parking code is P-17.\n", encoding="utf-8")
    container = Container(load_settings(data_dir=tmp / "data"))
    container.identity.add_group("hr")
    container.identity.add_group("it")
    container.collections.create("it", [], owners=["it"])
    container.identity.add_user("ada", "admin", password="ada-password")
    container.identity.add_user("cur", "curator", ["hr"], password="cur-password")
    container.identity.add_user("erin", "employee", password="erin-password")
    try:
        yield Console(container, LiveSessions(container, "/admin")), folder
    finally:
        container.close()


def request(name: str) -> Any:
    """What a Gradio handler receives: the session's user name as ``ui/app.py`` stores it."""
    return SimpleNamespace(username=SessionUser(name))


def last_records(console: Console, n: int) -> list[dict[str, Any]]:
    return audit_records(console.container.audit.export())[-n:]


def test_an_admin_adds_a_source_audited_like_the_rest_route(console: tuple[Console, Path]) -> None:
    c, folder = console
    jobs = c.container.jobs
    source = c.act(
        request("ada"),
        "POST /api/v1/sources",
        "/api/v1/sources",
        lambda p: jobs.add_source(p, None, str(folder), {}, None, [], 0),
        kind="filesystem",
    )
    assert [s.id for s in jobs.list_sources(c.container.identity.principal("ada"))] == [source.id]
    record = last_records(c, 1)[0]
    assert record["actor"] == "ada" and record["action"] == "POST /api/v1/sources"
    assert record["target"] == "/api/v1/sources"
    assert record["data"] == {"status": 200, "key_id": None, "via": "ui", "kind": "filesystem"}


def test_a_curator_is_refused_as_by_the_rest_api_and_the_refusal_audited(
    console: tuple[Console, Path],
) -> None:
    c, folder = console
    jobs = c.container.jobs
    before = len(audit_records(c.container.audit.export()))
    with pytest.raises(NotFound):  # `it` is owned by the group it: cur (hr) cannot even see it
        c.act(
            request("cur"),
            "POST /api/v1/sources",
            "/api/v1/sources",
            lambda p: jobs.add_source(p, None, str(folder), {}, "it", [], 0),
        )
    assert len(audit_records(c.container.audit.export())) == before  # a 404, as over REST
    with pytest.raises(Forbidden):  # an admin-only page's action, as the route's AdminDep
        c.act(request("cur"), "POST /api/v1/keys", "/api/v1/keys", lambda p: "issued", True)
    record = last_records(c, 1)[0]
    assert record["actor"] == "cur" and record["action"] == "auth.denied"
    assert record["target"] == "/api/v1/keys" and record["data"] == {"status": 403, "via": "ui"}


def test_an_employee_or_an_ended_session_does_nothing(console: tuple[Console, Path]) -> None:
    c, _ = console
    before = len(last_records(c, 10_000))
    called: list[str] = []
    for who in ("erin", "nobody"):
        with pytest.raises(Refused):
            c.act(request(who), "POST /api/v1/users", "/api/v1/users", lambda p: called.append(p.name))
    with pytest.raises(Refused):  # a name Gradio passes that no sign-in of ours made
        c.act(SimpleNamespace(username="ada"), "POST /api/v1/users", "/api/v1/users", called.append)
    assert called == [] and len(last_records(c, 10_000)) == before


def test_the_console_edits_a_source_in_place_audited_as_the_patch_route(
    console: tuple[Console, Path],
) -> None:
    c, folder = console
    jobs = c.container.jobs
    ada = request("ada")
    source = c.act(
        ada,
        "POST /api/v1/sources",
        "/api/v1/sources",
        lambda p: jobs.add_source(p, None, str(folder), {}, None, [], 0),
    )
    target = f"/api/v1/sources/{source.id}"
    edited = c.act(
        ada,
        "PATCH /api/v1/sources/{source_id}",
        target,
        lambda p: jobs.update_source(p, source.id, "filesystem", str(folder), {}, None, ["group:hr"], 600),
        kind="filesystem",
    )
    assert (edited.id, edited.interval_s, edited.acl, edited.created_at) == (
        source.id,
        600,
        ["group:hr"],
        source.created_at,
    )
    assert [s.id for s in jobs.list_sources(c.container.identity.principal("ada"))].count(source.id) == 1
    record = last_records(c, 1)[0]
    assert (record["action"], record["target"]) == ("PATCH /api/v1/sources/{source_id}", target)
    # A curator of another group cannot see it, as over REST: nothing changes, nothing recorded.
    with pytest.raises(NotFound):
        c.act(
            request("cur"),
            "PATCH /api/v1/sources/{source_id}",
            target,
            lambda p: jobs.update_source(p, source.id, interval_s=1),
        )
    assert jobs.sources.get(source.id).interval_s == 600 and last_records(c, 1)[0] == record
    jobs.remove_source(c.container.identity.principal("ada"), source.id)
