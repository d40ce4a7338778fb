"""Curators manage the sources and collections of their groups, and only those: over HTTP, with real
ingestion (unstructured parsing, all-MiniLM-L6-v2, the Qdrant Edge shard) behind the jobs.

Departments: company > engineering > platform, company > hr. `pat` curates through platform what
engineering owns (nested groups count); `hana` curates hr's; `emma` is an employee. A collection
a curator cannot even see answers 404; one it sees (it reads a document there) but does not
curate answers 403; so does every curator route for an employee."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import connectors
from appliance.api.app import create_app
from appliance.container import Container
from appliance.security.auth import issue_key
from appliance.settings import load_settings

pytestmark = pytest.mark.slow

ADMIN_KEY = "kb-curator-admin-0123456789"


def _folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"{name}.md").write_text(
        f"# {name.title()}\n\nNotes of the {name} team about the quarterly plan.\n", encoding="utf-8"
    )
    return folder


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("curators")
    container = Container(
        load_settings(
            data_dir=root / "data",
            auth={"admin_key": ADMIN_KEY},
            # Curators may register local folders under new/ only (see the reach test), and the
            # remote sources listed here (see the remote reach test).
            connectors={
                "local_roots": [str(root / "new")],
                "web": {"curator_hosts": ["wiki.example"]},
                "s3": {
                    "endpoint_url": "http://s3.internal.example:9000",
                    "curator_buckets": ["eng-docs"],
                    "access_key_id": "appliance",
                    "secret_access_key": "appliance-s3-secret",
                },
                "git": {"curator_repos": ["https://git.example/eng/"]},
                "sql": {"curator_urls": ["postgresql://kb:db-secret@db.example:5432/kb"]},
            },
            log_level="WARNING",
        )
    )
    ids = container.identity
    container.keys.bootstrap_admin()
    ids.add_group("company")
    ids.add_group("engineering", parent="company")
    ids.add_group("platform", parent="engineering")
    ids.add_group("hr", parent="company")
    ids.add_user("pat", "curator", ["platform"])
    ids.add_user("hana", "curator", ["hr"])
    ids.add_user("emma", "employee", ["platform"])
    cols = container.collections
    cols.create("eng-kb", [], owners=["engineering"])
    cols.create("hr-kb", ["group:hr"], owners=["hr"])  # hr readers only
    cols.create("hr-news", [], owners=["hr"])  # everyone reads it, hr curates it
    docs = {}
    for collection in ("eng-kb", "hr-kb", "hr-news"):
        folder = _folder(root / "src", collection)
        report = container.jobs.run([connectors.for_source(str(folder))], collection, [], "admin")
        assert report["added"] == 1 and report["failed"] == [], report
        docs[collection] = container.ledger.list(collection)[0].id
    keys = {u: issue_key(container.keys, ids, u).key for u in ("pat", "hana", "emma")}
    keys["admin"] = ADMIN_KEY
    client = TestClient(create_app(container), raise_server_exceptions=False)
    try:
        yield {"container": container, "client": client, "keys": keys, "docs": docs, "root": root}
    finally:
        container.close()


def _h(kb: dict[str, Any], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {kb['keys'][who]}"}


def _code(r: Any) -> tuple[int, str | None]:
    body = r.json()
    return r.status_code, body.get("error", {}).get("code") if isinstance(body, dict) else None


def _wait(kb: dict[str, Any], job_id: str) -> dict[str, Any]:
    return kb["container"].jobs.manager.wait(job_id, timeout=300)  # type: ignore[no-any-return]


def test_a_curator_writes_only_into_collections_of_its_groups(kb: dict[str, Any]) -> None:
    c: TestClient = kb["client"]
    src = str(_folder(kb["root"] / "new", "pat-notes"))
    r = c.post("/api/v1/jobs", json={"sources": [src], "collection": "eng-kb"}, headers=_h(kb, "pat"))
    assert r.status_code == 202, r.text
    assert _wait(kb, r.json()["id"])["status"] == "succeeded"
    expected = {"hr-news": (403, "forbidden"), "hr-kb": (404, "not_found"), None: (404, "not_found")}
    for collection, answer in expected.items():
        body = {"sources": [src], **({"collection": collection} if collection else {})}
        assert _code(c.post("/api/v1/jobs", json=body, headers=_h(kb, "pat"))) == answer, collection
        r = c.post("/api/v1/sources", json={**body, "spec": src}, headers=_h(kb, "pat"))
        assert _code(r) == answer, collection
        r = c.post(
            "/api/v1/documents",
            files={"file": ("up.md", b"# Up\n\nAn uploaded note.\n", "text/markdown")},
            data={"collection": collection} if collection else {},
            headers=_h(kb, "pat"),
        )
        assert _code(r) == answer, collection
    r = c.post(
        "/api/v1/documents",
        files={"file": ("up.md", b"# Up\n\nAn uploaded note.\n", "text/markdown")},
        data={"collection": "eng-kb"},
        headers=_h(kb, "pat"),
    )
    assert r.status_code == 202, r.text
    assert _wait(kb, r.json()["job"]["id"])["status"] == "succeeded"
    r = c.post("/api/v1/sources", json={"spec": src, "collection": "eng-kb"}, headers=_h(kb, "pat"))
    assert r.status_code == 201, r.text
    # An employee curates nothing, whatever its groups own.
    for method, path, body in (
        ("POST", "/api/v1/jobs", {"sources": [src], "collection": "eng-kb"}),
        ("GET", "/api/v1/jobs", None),
        ("GET", "/api/v1/sources", None),
        ("POST", "/api/v1/collections", {"name": "emma-kb", "owners": ["platform"]}),
        ("DELETE", "/api/v1/collections/eng-kb", None),
        ("DELETE", f"/api/v1/documents/{kb['docs']['eng-kb']}", None),
    ):
        r = c.request(method, path, json=body, headers=_h(kb, "emma"))
        assert _code(r) == (403, "forbidden"), (method, path, r.text)


def test_another_groups_sources_and_jobs_are_not_found(kb: dict[str, Any]) -> None:
    c: TestClient = kb["client"]
    src = str(_folder(kb["root"] / "admin", "hr-feed"))
    source = c.post("/api/v1/sources", json={"spec": src, "collection": "hr-news"}, headers=_h(kb, "admin"))
    assert source.status_code == 201, source.text
    sid = source.json()["id"]
    job = c.post("/api/v1/jobs", json={"sources": [src], "collection": "hr-kb"}, headers=_h(kb, "admin"))
    assert job.status_code == 202, job.text
    jid = job.json()["id"]
    _wait(kb, jid)
    # hana curates hr: she sees both.
    assert c.get(f"/api/v1/sources/{sid}", headers=_h(kb, "hana")).status_code == 200
    assert c.get(f"/api/v1/jobs/{jid}", headers=_h(kb, "hana")).status_code == 200
    assert sid in {s["id"] for s in c.get("/api/v1/sources", headers=_h(kb, "hana")).json()["items"]}
    # pat does not: another group's ids do not exist for him.
    for method, path in (
        ("GET", f"/api/v1/sources/{sid}"),
        ("POST", f"/api/v1/sources/{sid}/sync"),
        ("DELETE", f"/api/v1/sources/{sid}"),
        ("GET", f"/api/v1/jobs/{jid}"),
        ("POST", f"/api/v1/jobs/{jid}/cancel"),
    ):
        assert _code(c.request(method, path, headers=_h(kb, "pat"))) == (404, "not_found"), path
    jobs = c.get("/api/v1/jobs", params={"limit": 500}, headers=_h(kb, "pat")).json()["items"]
    assert jobs and {j["collection"] for j in jobs} == {"eng-kb"}
    sources = c.get("/api/v1/sources", headers=_h(kb, "pat")).json()["items"]
    assert {s["collection"] for s in sources} == {"eng-kb"}
    everything = c.get("/api/v1/jobs", params={"limit": 500}, headers=_h(kb, "admin")).json()["items"]
    assert {"eng-kb", "hr-kb"} <= {j["collection"] for j in everything}
    assert c.get(f"/api/v1/sources/{sid}", headers=_h(kb, "admin")).status_code == 200


def test_a_curator_creates_and_deletes_collections_of_its_groups(kb: dict[str, Any]) -> None:
    c: TestClient = kb["client"]
    pat = _h(kb, "pat")
    r = c.post("/api/v1/collections", json={"name": "eng-notes", "owners": ["engineering"]}, headers=pat)
    assert r.status_code == 201 and r.json()["owners"] == ["engineering"], r.text
    assert _code(c.post("/api/v1/collections", json={"name": "x1", "owners": ["hr"]}, headers=pat)) == (
        403,
        "forbidden",
    )
    assert c.post("/api/v1/collections", json={"name": "x2"}, headers=pat).status_code == 400
    assert (
        c.post("/api/v1/collections", json={"name": "x3", "owners": ["nope"]}, headers=pat).status_code == 404
    )
    assert _code(c.delete("/api/v1/collections/hr-news", headers=pat)) == (403, "forbidden")
    assert _code(c.delete("/api/v1/collections/hr-kb", headers=pat)) == (404, "not_found")
    assert c.delete("/api/v1/collections/eng-notes", headers=pat).status_code == 204
    assert "eng-notes" not in kb["container"].collections.names()
    # An admin hands a collection to another group's curators, and takes it back.
    assert _code(c.patch("/api/v1/collections/hr-news", json={"owners": ["engineering"]}, headers=pat)) == (
        403,
        "forbidden",
    )
    r = c.patch(
        "/api/v1/collections/hr-news", json={"owners": ["hr", "engineering"]}, headers=_h(kb, "admin")
    )
    assert r.status_code == 200 and r.json()["owners"] == ["engineering", "hr"], r.text
    src = str(_folder(kb["root"] / "new", "handed"))
    r = c.post("/api/v1/sources", json={"spec": src, "collection": "hr-news"}, headers=pat)
    assert r.status_code == 201, r.text
    c.patch("/api/v1/collections/hr-news", json={"owners": ["hr"]}, headers=_h(kb, "admin"))
    assert _code(c.get(f"/api/v1/sources/{r.json()['id']}", headers=pat)) == (404, "not_found")


def test_documents_of_another_groups_collections(kb: dict[str, Any]) -> None:
    c: TestClient = kb["client"]
    docs = kb["docs"]
    for action in ("delete", "reindex"):
        method, suffix = ("DELETE", "") if action == "delete" else ("POST", "/reindex")
        # pat may read the hr-news document, so it exists for him, but it is not his to manage.
        r = c.request(method, f"/api/v1/documents/{docs['hr-news']}{suffix}", headers=_h(kb, "pat"))
        assert _code(r) == (403, "forbidden"), r.text
        r = c.request(method, f"/api/v1/documents/{docs['hr-kb']}{suffix}", headers=_h(kb, "pat"))
        assert _code(r) == (404, "not_found"), r.text
    r = c.post(f"/api/v1/documents/{docs['eng-kb']}/reindex", headers=_h(kb, "pat"))
    assert r.status_code == 202, r.text
    assert _wait(kb, r.json()["id"])["status"] == "succeeded"
    assert kb["container"].ledger.get(docs["hr-news"]) is not None


def test_collections_list_shows_what_one_reads_in_or_curates(kb: dict[str, Any]) -> None:
    c: TestClient = kb["client"]

    def listed(who: str, **params: Any) -> dict[str, dict[str, Any]]:
        r = c.get("/api/v1/collections", params={"limit": 200, **params}, headers=_h(kb, who))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["total"] == len(body["items"])
        return {i["name"]: i for i in body["items"]}

    emma, pat, hana = listed("emma"), listed("pat"), listed("hana")
    assert {"eng-kb", "hr-news"} <= set(emma) and "hr-kb" not in emma
    assert "hr-kb" not in pat and "hr-kb" in hana
    assert {"eng-kb", "hr-kb", "hr-news"} <= set(listed("admin"))
    # Counts of a collection one only reads in are of what one may read.
    assert (emma["hr-news"]["documents"], hana["hr-news"]["documents"]) == (
        1,
        len(kb["container"].ledger.list("hr-news")),
    )
    for who in ("emma", "pat"):
        assert _code(c.get("/api/v1/collections/hr-kb", headers=_h(kb, who))) == (404, "not_found")
    assert c.get("/api/v1/collections/hr-kb", headers=_h(kb, "hana")).status_code == 200
    scoped = issue_key(kb["container"].keys, kb["container"].identity, "emma", collections=["eng-kb"]).key
    r = c.get("/api/v1/collections", headers={"Authorization": f"Bearer {scoped}"})
    assert [i["name"] for i in r.json()["items"]] == ["eng-kb"]


def test_where_a_source_may_point(kb: dict[str, Any]) -> None:
    """Curators: local paths only under connectors.local_roots. Nobody: the data directory, which
    holds the metadata DB, the audit log and the key hashes."""
    c: TestClient = kb["client"]
    outside = str(_folder(kb["root"] / "elsewhere", "pat-private"))
    inside = str(_folder(kb["root"] / "new", "pat-allowed"))
    pat, admin = _h(kb, "pat"), _h(kb, "admin")
    for route, body in (
        ("/api/v1/jobs", {"sources": [outside], "collection": "eng-kb"}),
        ("/api/v1/sources", {"spec": outside, "collection": "eng-kb"}),
        (
            "/api/v1/sources",
            {"spec": f"sqlite:///{kb['root'] / 'data' / 'appliance.db'}#documents", "collection": "eng-kb"},
        ),
    ):
        r = c.post(route, json=body, headers=pat)
        assert _code(r) == (403, "forbidden"), (route, r.text)
        assert (
            "local_roots" in r.json()["error"]["message"] or "data directory" in r.json()["error"]["message"]
        )
    # A local repository named as a file:// URL reads this host's disk just the same.
    repo = kb["root"] / "elsewhere" / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    r = c.post("/api/v1/sources", json={"spec": f"git+file://{repo}", "collection": "eng-kb"}, headers=pat)
    assert _code(r) == (403, "forbidden"), r.text
    r = c.post("/api/v1/jobs", json={"sources": [inside], "collection": "eng-kb"}, headers=pat)
    assert r.status_code == 202, r.text
    assert _wait(kb, r.json()["id"])["status"] == "succeeded"
    # An admin may name any folder but the data directory, or a SQLite file inside it.
    r = c.post("/api/v1/jobs", json={"sources": [outside], "collection": "eng-kb"}, headers=admin)
    assert r.status_code == 202, r.text
    assert _wait(kb, r.json()["id"])["status"] == "succeeded"
    data_dir = kb["root"] / "data"
    for spec in (
        str(data_dir),
        str(data_dir / "audit"),
        f"sqlite:///{data_dir / 'appliance.db'}#documents",
        f"sqlite:///file:{data_dir / 'appliance.db'}?mode=ro&uri=true#documents",
    ):
        r = c.post("/api/v1/jobs", json={"sources": [spec], "collection": "eng-kb"}, headers=admin)
        assert _code(r) == (403, "forbidden"), (spec, r.text)
        assert "data directory" in r.json()["error"]["message"]
    # A folder that contains a visible data directory would be walked into: refused too.
    r = c.post("/api/v1/jobs", json={"sources": [str(kb["root"])], "collection": "eng-kb"}, headers=admin)
    assert _code(r) == (403, "forbidden"), r.text
    # An upload is never a source one names: its URI may be another collection's file.
    upload = "upload://hr-kb/" + "0" * 32 + ".md/notes.md"
    for body in ({"spec": upload}, {"kind": "upload", "options": {"uri": upload}}):
        r = c.post("/api/v1/sources", json={**body, "collection": "eng-kb"}, headers=admin)
        assert _code(r) == (400, "invalid_request"), (body, r.text)


def test_a_curator_reaches_only_the_remote_sources_an_admin_listed(kb: dict[str, Any]) -> None:
    """A curator's remote source borrows the appliance's credentials and network position, so it
    must be one an admin listed; anything else is 403 before a connector is built to connect."""
    c: TestClient = kb["client"]
    container = kb["container"]
    pat, admin = _h(kb, "pat"), _h(kb, "admin")
    refused: list[dict[str, Any]] = [
        {"spec": "s3://finance-docs/"},
        # The configured credentials must not sign requests to an endpoint a request names.
        {"spec": "s3://eng-docs/", "options": {"endpoint_url": "http://169.254.169.254/"}},
        {"kind": "s3", "options": {"bucket": "eng-docs", "endpoint_url": "http://attacker.example/"}},
        {"spec": "s3://eng-docs/", "options": {"access_key_id": "someone-else"}},
        # ssh would use the appliance account's keys.
        {"spec": "git+ssh://git@git.example/finance/ledger.git"},
        {"spec": "git+https://git.example/engineering-private/notes.git"},  # a prefix ends at its /
        {"spec": "postgresql://kb@db.example:5432/payroll#SELECT id, body FROM pay"},
        {"spec": "https://intranet.example/"},
        {"spec": "https://wiki.example/", "options": {"allowed_domains": ["wiki.example", "hr.example"]}},
    ]
    jobs_before = len(container.jobs.manager.list(1000))
    for body in refused:
        r = c.post("/api/v1/sources", json={**body, "collection": "eng-kb", "interval_s": 0}, headers=pat)
        assert _code(r) == (403, "forbidden"), (body, r.text)
        if "spec" in body:
            job = {"sources": [body["spec"]], "options": body.get("options", {}), "collection": "eng-kb"}
            assert _code(c.post("/api/v1/jobs", json=job, headers=pat)) == (403, "forbidden"), body
    assert len(container.jobs.manager.list(1000)) == jobs_before, "no job started for a refused source"

    added = []
    for spec in (
        "s3://eng-docs/handbook/",
        "git+https://git.example/eng/handbook.git",
        "postgresql://kb@db.example:5432/kb#SELECT id, body FROM articles",
        "https://wiki.example/",
    ):
        r = c.post(
            "/api/v1/sources", json={"spec": spec, "collection": "eng-kb", "interval_s": 0}, headers=pat
        )
        assert r.status_code == 201, (spec, r.text)
        assert "db-secret" not in r.text
        added.append(r.json()["id"])
    # The database is reached with the URL the admin listed, password included; the curator never
    # named or saw it.
    principal = container.keys.authenticate(kb["keys"]["pat"])
    sql = container.jobs.connector(
        "spec", "postgresql://kb@db.example:5432/kb#SELECT id, body FROM articles", {}, principal
    )
    assert "db-secret" in sql.options()["url"] and "db-secret" not in sql.root
    sql.close()
    # An admin key scoped to a collection is an admin inside it only: a curator's reach.
    scoped = issue_key(container.keys, container.identity, "admin", collections=["eng-kb"]).key
    outside = str(_folder(kb["root"] / "elsewhere", "scoped-admin"))
    for body in ({"spec": "s3://finance-docs/"}, {"spec": outside}):
        r = c.post(
            "/api/v1/sources",
            json={**body, "collection": "eng-kb", "interval_s": 0},
            headers={"Authorization": f"Bearer {scoped}"},
        )
        assert _code(r) == (403, "forbidden"), (body, r.text)
    # An admin's own request is the admin's decision.
    r = c.post(
        "/api/v1/sources",
        json={"spec": "s3://finance-docs/", "collection": "eng-kb", "interval_s": 0},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    for sid in [*added, r.json()["id"]]:
        assert c.delete(f"/api/v1/sources/{sid}", headers=admin).status_code == 204


def test_a_stored_source_syncs_with_its_registrants_reach_as_it_is_now(kb: dict[str, Any]) -> None:
    """A curator registers a folder; once disabled, demoted or no longer curating the collection,
    the source's syncs fail with that reason instead of running with the reach they lost."""
    c: TestClient = kb["client"]
    container = kb["container"]
    ids = container.identity
    ids.add_user("pia", "curator", ["platform"])
    pia = {"Authorization": f"Bearer {issue_key(container.keys, ids, 'pia').key}"}
    admin = _h(kb, "admin")
    src = str(_folder(kb["root"] / "new", "pia-notes"))
    r = c.post("/api/v1/sources", json={"spec": src, "collection": "eng-kb", "interval_s": 0}, headers=pia)
    assert r.status_code == 201 and r.json()["registered_by"] == "pia", r.text
    sid = r.json()["id"]

    def sync() -> dict[str, Any]:
        r = c.post(f"/api/v1/sources/{sid}/sync", headers=admin)
        assert r.status_code == 202, r.text
        return _wait(kb, r.json()["id"])

    assert sync()["status"] == "succeeded"
    for change, undo, reason in (
        ({"disabled": True}, {"disabled": False}, "disabled"),
        ({"role": "employee"}, {"role": "curator"}, "no longer curates"),
    ):
        ids.update_user("pia", **change)
        job = sync()
        assert job["status"] == "failed" and reason in job["error"], job
        assert "pia" in job["error"]
        ids.update_user("pia", **undo)
    # Her group loses the collection: the same.
    c.patch("/api/v1/collections/eng-kb", json={"owners": ["hr"]}, headers=admin)
    try:
        job = sync()
        assert job["status"] == "failed" and "no longer curates" in job["error"], job
    finally:
        c.patch("/api/v1/collections/eng-kb", json={"owners": ["engineering"]}, headers=admin)
    assert sync()["status"] == "succeeded"
    # The scheduler's syncs are checked the same way: it runs them as jobs of their own.
    ids.update_user("pia", disabled=True)
    scheduled = container.jobs.sync(sid, "scheduler")
    assert _wait(kb, scheduled.id)["status"] == "failed"
    ids.update_user("pia", disabled=False)
    assert c.delete(f"/api/v1/sources/{sid}", headers=admin).status_code == 204


def test_document_lists_show_readers_only_what_they_need(kb: dict[str, Any]) -> None:
    """Who manages a collection (its curators, admins) sees a document whole; another reader sees
    no source spec and, of its ACL, only the entries that let them in. The list is one page of the
    ledger read in SQL (LIMIT/OFFSET), not every row."""
    from sqlalchemy import event

    c: TestClient = kb["client"]
    container = kb["container"]
    folder = _folder(kb["root"] / "src", "shared-notes")
    report = container.jobs.run(
        [connectors.for_source(str(folder))], "eng-kb", ["group:platform", "user:hana"], "admin"
    )
    assert report["added"] == 1, report
    shared = next(r for r in container.ledger.list("eng-kb") if "shared-notes" in r.uri)

    def listed(who: str) -> dict[str, Any]:
        r = c.get("/api/v1/documents", params={"collection": "eng-kb", "limit": 200}, headers=_h(kb, who))
        assert r.status_code == 200, r.text
        return {d["id"]: d for d in r.json()["items"]}

    emma, hana, pat = listed("emma")[shared.id], listed("hana")[shared.id], listed("pat")[shared.id]
    assert (emma["allow"], emma["source"]) == (["group:platform"], None)
    assert (hana["allow"], hana["source"]) == (["user:hana"], None)
    assert sorted(pat["allow"]) == ["group:platform", "user:hana"] and pat["source"] == shared.source
    one = c.get(f"/api/v1/documents/{shared.id}", headers=_h(kb, "emma")).json()
    assert (one["allow"], one["source"]) == (["group:platform"], None)
    # Paged in SQL: the rows come with LIMIT/OFFSET, and the page and total agree with reading it all.
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(container.engine, "before_cursor_execute", seen)
    try:
        r = c.get("/api/v1/documents", params={"limit": 1, "offset": 1}, headers=_h(kb, "emma"))
    finally:
        event.remove(container.engine, "before_cursor_execute", seen)
    documents = [s for s in statements if "FROM documents" in s and "count(" not in s.lower()]
    assert documents and all("LIMIT" in s and "OFFSET" in s for s in documents), documents
    everything = c.get("/api/v1/documents", params={"limit": 200}, headers=_h(kb, "emma")).json()
    assert r.json()["total"] == everything["total"] and r.json()["items"] == everything["items"][1:2]
    assert {d["collection"] for d in everything["items"]} <= {"eng-kb", "hr-news"}


def test_a_source_is_edited_in_place_with_the_editors_reach(kb: dict[str, Any]) -> None:
    """PATCH /api/v1/sources/{id} keeps the id, the last sync and the job history, and is
    authorised as registering it: the editor must curate the collection (old and new) and reach
    the new spec; the editor becomes the registrant, so an admin's source edited by a curator
    does not keep syncing with an admin's reach. A secret given back masked stays."""
    c: TestClient = kb["client"]
    container = kb["container"]
    pat, hana, emma, admin = (_h(kb, u) for u in ("pat", "hana", "emma", "admin"))
    inside = str(_folder(kb["root"] / "new", "pat-edit"))
    outside = str(_folder(kb["root"] / "elsewhere", "pat-edit-out"))
    r = c.post("/api/v1/sources", json={"spec": inside, "collection": "eng-kb", "interval_s": 0}, headers=pat)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    job = c.post(f"/api/v1/sources/{sid}/sync", headers=pat).json()["id"]
    assert _wait(kb, job)["status"] == "succeeded"

    r = c.patch(f"/api/v1/sources/{sid}", json={"interval_s": 3600, "allow": ["group:platform"]}, headers=pat)
    assert r.status_code == 200, r.text
    got = r.json()
    assert (got["id"], got["interval_s"], got["allow"], got["spec"]) == (
        sid,
        3600,
        ["group:platform"],
        inside,
    )
    assert got["last_job_id"] == job and got["last_sync_at"] and got["registered_by"] == "pat"
    assert [s["id"] for s in c.get("/api/v1/sources", headers=pat).json()["items"]].count(sid) == 1
    assert [
        j["id"] for j in c.get("/api/v1/jobs", params={"source_id": sid}, headers=pat).json()["items"]
    ] == [job]
    audit = container.audit.export().splitlines()
    assert any('"PATCH /api/v1/sources/{source_id}"' in line and sid in line for line in audit)

    # Refused as adding it would be; nothing changes.
    for who, body, expected in (
        (pat, {"spec": outside}, {403}),  # outside connectors.local_roots
        (pat, {"collection": "hr-kb"}, {403, 404}),  # not a collection of pat's groups
        (hana, {"interval_s": 5}, {404}),  # another group's source: none of hers
        (emma, {"interval_s": 5}, {403}),
        (pat, {"bogus": 1}, {422}),
    ):
        r = c.patch(f"/api/v1/sources/{sid}", json=body, headers=who)
        assert r.status_code in expected, (body, r.text)
    assert c.get(f"/api/v1/sources/{sid}", headers=pat).json() == got
    assert c.patch("/api/v1/sources/nope", json={"interval_s": 1}, headers=admin).status_code == 404

    # An admin points it outside the curators' roots: from now on it syncs with the admin's reach,
    # and a curator's edit of it, even of the schedule alone, is checked with the curator's.
    r = c.patch(f"/api/v1/sources/{sid}", json={"spec": outside}, headers=admin)
    assert r.status_code == 200 and r.json()["spec"] == outside and r.json()["id"] == sid, r.text
    assert r.json()["registered_by"] != "pat"
    assert _code(c.patch(f"/api/v1/sources/{sid}", json={"interval_s": 60}, headers=pat)) == (
        403,
        "forbidden",
    )
    assert container.jobs.sources.get(sid).interval_s == 3600
    assert c.delete(f"/api/v1/sources/{sid}", headers=admin).status_code == 204

    # A secret shown masked and given back masked keeps the stored one; a new value replaces it.
    body = {"kind": "s3", "options": {"bucket": "eng-docs", "secret_access_key": "s3-secret-1"}}
    r = c.post("/api/v1/sources", json={**body, "collection": "eng-kb", "interval_s": 0}, headers=admin)
    assert r.status_code == 201 and r.json()["options"]["secret_access_key"] == "***", r.text
    sid = r.json()["id"]
    shown = r.json()["options"]
    r = c.patch(f"/api/v1/sources/{sid}", json={"options": {**shown, "prefix": "handbook/"}}, headers=admin)
    assert r.status_code == 200, r.text
    stored = container.jobs.sources.get(sid).options
    assert stored["secret_access_key"] == "s3-secret-1" and stored["prefix"] == "handbook/"
    r = c.patch(
        f"/api/v1/sources/{sid}",
        json={"options": {**shown, "secret_access_key": "s3-secret-2"}},
        headers=admin,
    )
    assert (
        r.status_code == 200 and container.jobs.sources.get(sid).options["secret_access_key"] == "s3-secret-2"
    )
    assert c.delete(f"/api/v1/sources/{sid}", headers=admin).status_code == 204
