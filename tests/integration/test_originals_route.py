"""GET /api/v1/documents/{id}/original and /preview on the real app (ingested with the real
parser and embedder): readers only, with a Bearer key or the UI's sign-in cookie; 404 for anyone
else, exactly as for a guessed id; PDFs and text inline, anything else downloaded; the preview is
text with the chunk highlighted, no script and no fetch allowed by its CSP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from appliance.api.app import create_app
from appliance.container import Container
from appliance.domain import LOCAL_ADMIN, document_id
from appliance.security.auth import issue_key
from appliance.settings import load_settings
from tests.fixtures.corpus import SAFETY_HTML, make_corpus
from ui.app import mount_ui

pytestmark = pytest.mark.slow

SECRET_MD = "# Board minutes\n\nThe merger code name chosen by the board is Project Bluefin.\n"
HOSTILE_HTML = (
    "<html><head><title>Evil <script>window.__pwned=1</script></title></head><body>"
    '<p>The zebra code is Z-42. <img src="http://127.0.0.1:9/beacon"> <script>window.__pwned=1</script></p>'
    "</body></html>"
)
HOSTILE_TXT = "The zebra code is Z-42. <script>window.__pwned=1</script> ![x](http://127.0.0.1:9/beacon)\n"


def _ingest(container: Container, path: Path, collection: str, allow: list[str]) -> None:
    job = container.jobs.start_job(LOCAL_ADMIN, [str(path)], collection, allow, {})
    done = container.jobs.manager.wait(job.id, timeout=600)
    assert done["status"] == "succeeded", done


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("originals")
    container = Container(load_settings(data_dir=tmp / "data"))
    client = TestClient(create_app(container, mount_ui), base_url="http://127.0.0.1:8000")
    corpus = make_corpus(tmp / "corpus")
    secret = tmp / "secret"
    secret.mkdir()
    (secret / "minutes.md").write_text(SECRET_MD)
    hostile = tmp / "hostile"
    hostile.mkdir()
    (hostile / "evil.html").write_text(HOSTILE_HTML)
    (hostile / "evil.txt").write_text(HOSTILE_TXT)
    try:
        _ingest(container, corpus, "default", [])
        _ingest(container, secret, "default", ["user:carol"])
        _ingest(container, hostile, "default", [])
        ids = container.identity
        ids.add_user("erin", "employee", password="erin-password")
        ids.add_user("carol", "employee", password="carol-password")
        keys = {
            "admin": container.keys.bootstrap_admin().key,  # type: ignore[union-attr]
            "erin": issue_key(container.keys, ids, "erin").key,
            "carol": issue_key(container.keys, ids, "carol").key,
        }
        yield {"client": client, "container": container, "keys": keys, "tmp": tmp}
    finally:
        container.close()


def _doc(site: dict[str, Any], relative: str) -> str:
    return document_id("default", (site["tmp"] / relative).resolve().as_uri())


def _get(site: dict[str, Any], path: str, user: str | None = None) -> Any:
    client: TestClient = site["client"]
    client.cookies.clear()
    headers = {"Authorization": f"Bearer {site['keys'][user]}"} if user else {}
    return client.get(path, headers=headers)


def test_readers_get_the_original_with_a_key(site: dict[str, Any]) -> None:
    doc = _doc(site, "corpus/handbook.md")
    r = _get(site, f"/api/v1/documents/{doc}/original", "erin")
    assert r.status_code == 200
    assert r.content == (site["tmp"] / "corpus" / "handbook.md").read_bytes()
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"].startswith("inline")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]
    pdf = _get(site, f"/api/v1/documents/{_doc(site, 'corpus/warranty.pdf')}/original", "erin")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and pdf.headers["content-disposition"].startswith("inline")


def test_an_html_original_is_downloaded_never_rendered(site: dict[str, Any]) -> None:
    r = _get(site, f"/api/v1/documents/{_doc(site, 'hostile/evil.html')}/original", "erin")
    assert r.status_code == 200 and r.content == HOSTILE_HTML.encode()
    assert r.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in r.headers["content-security-policy"]


def test_others_and_guessed_ids_get_the_same_404(site: dict[str, Any]) -> None:
    secret = _doc(site, "secret/minutes.md")
    assert _get(site, f"/api/v1/documents/{secret}/original", "carol").status_code == 200
    guessed = str(uuid.uuid4())
    for view in ("original", "preview"):
        denied = _get(site, f"/api/v1/documents/{secret}/{view}", "erin")
        missing = _get(site, f"/api/v1/documents/{guessed}/{view}", "erin")
        assert denied.status_code == missing.status_code == 404
        assert denied.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        assert "Bluefin" not in denied.text
        assert denied.json()["error"]["message"].replace(secret, "ID") == missing.json()["error"][
            "message"
        ].replace(guessed, "ID")
    assert _get(site, f"/api/v1/documents/{secret}/original").status_code == 401  # no key, no cookie


def test_the_ui_cookie_authenticates_and_follows_the_session(site: dict[str, Any]) -> None:
    client: TestClient = site["client"]
    doc = _doc(site, "corpus/notes.txt")
    client.cookies.clear()
    assert client.post("/login", data={"username": "erin", "password": "erin-password"}).status_code == 200
    assert client.get(f"/api/v1/documents/{doc}/original").status_code == 200
    secret = _doc(site, "secret/minutes.md")
    assert client.get(f"/api/v1/documents/{secret}/original").status_code == 404
    site["container"].identity.update_user("erin", disabled=True)
    try:
        assert client.get(f"/api/v1/documents/{doc}/original").status_code == 401  # the session ended
    finally:
        site["container"].identity.update_user("erin", disabled=False)


def test_preview_is_escaped_text_with_the_chunk_highlighted(site: dict[str, Any]) -> None:
    container = site["container"]
    doc = _doc(site, "hostile/evil.txt")
    rec = container.ledger.get(doc)
    r = _get(site, f"/api/v1/documents/{doc}/preview?chunk={rec.chunk_ids[0]}", "erin")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    body = r.text
    assert 'id="kb-hit"' in body and "Z-42" in body
    assert "<script>window" not in body and "<img" not in body  # the title and text are escaped
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    safety = _doc(site, "corpus/safety.html")
    chunks = container.store.get("default", container.ledger.get(safety).chunk_ids)
    hit = next(c for c in chunks if "north visitor parking lot" in c.text)
    page = _get(site, f"/api/v1/documents/{safety}/preview?chunk={hit.id}", "erin").text
    marked = page.split('id="kb-hit"', 1)[1].split("</section>", 1)[0]
    assert "north visitor parking lot" in marked
    assert "Hard hats" in page and SAFETY_HTML.count("<p>") > 1  # the other chunks are there, unmarked


def test_preview_speaks_the_readers_language(site: dict[str, Any]) -> None:
    client: TestClient = site["client"]
    client.cookies.clear()
    doc = _doc(site, "corpus/handbook.md")
    key = {"Authorization": f"Bearer {site['keys']['erin']}"}
    english = client.get(f"/api/v1/documents/{doc}/preview", headers=key)
    assert english.headers["content-language"] == "en" and ">Original file</a>" in english.text
    chinese = client.get(
        f"/api/v1/documents/{doc}/preview", headers={**key, "Accept-Language": "zh-CN,zh;q=0.9"}
    )
    assert chinese.headers["content-language"] == "zh" and ">原始文件</a>" in chinese.text
    assert chinese.headers["content-security-policy"] == english.headers["content-security-policy"]
    client.cookies.set("kb-lang", "zh")
    try:
        chosen = client.get(f"/api/v1/documents/{doc}/preview", headers={**key, "Accept-Language": "en-US"})
    finally:
        client.cookies.clear()
    assert '<html lang="zh-CN">' in chosen.text and "索引于" in chosen.text


def test_an_uploaded_document_is_served_back(site: dict[str, Any]) -> None:
    client: TestClient = site["client"]
    client.cookies.clear()
    admin = {"Authorization": f"Bearer {site['keys']['admin']}"}
    r = client.post(
        "/api/v1/documents",
        headers=admin,
        files={"file": ("policy notes.txt", b"Uploads are kept in the upload folder.\n", "text/plain")},
        data={"allow": ["user:erin"]},
    )
    assert r.status_code == 202, r.text
    doc = r.json()["document_id"]
    assert site["container"].jobs.manager.wait(r.json()["job"]["id"], timeout=600)["status"] == "succeeded"
    got = _get(site, f"/api/v1/documents/{doc}/original", "erin")
    assert got.status_code == 200 and got.content == b"Uploads are kept in the upload folder.\n"
    assert "policy%20notes.txt" in got.headers["content-disposition"]
    assert _get(site, f"/api/v1/documents/{doc}/original", "carol").status_code == 404
