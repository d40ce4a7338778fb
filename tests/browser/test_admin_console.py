"""The admin console at /admin in a real browser, on the chat's server and fixtures: an admin adds
a folder source and watches its job's bar reach done, then finds the document in the Documents
table (hostile titles and chunks stay text); an admin issues a key, the key's chat session works,
the admin revokes it and the session ends; an employee is refused."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import shot, wait_until
from tests.conftest import ROOT

pytestmark = pytest.mark.browser

ORCHARD_MD = "# Orchard rota\n\nThe orchard watering rota starts on Mondays at seven.\n"


@pytest.fixture(scope="module")
def ada(site: dict[str, Any]) -> Iterator[str]:
    """An admin who signs in with a password (the bootstrap admin has only its key)."""
    r = site["api"].post("/users", json={"name": "ada", "role": "admin", "password": "ada-password"})
    assert r.status_code in (201, 409), r.text
    yield "ada"


def admin_sign_in(page: Any, url: str, user: str, password: str | None = None) -> None:
    page.goto(url + "/admin/")
    page.locator("input:not([type=password])").first.fill(user)
    page.locator("input[type=password]").fill(password or f"{user}-password")
    page.locator("input[type=password]").press("Enter")
    page.locator("#kb-admin-header .kb-user").filter(has_text=user).wait_for(timeout=60_000)


def field(page: Any, elem_id: str) -> Any:
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def test_admin_adds_a_folder_source_sees_it_done_and_finds_the_document(
    new_page: Any, site: dict[str, Any], ada: str, tmp_path: Path
) -> None:
    folder = tmp_path / "orchard"
    folder.mkdir()
    (folder / "orchard_rota.md").write_text(ORCHARD_MD, encoding="utf-8")
    url = site["server"].url
    page = new_page()
    admin_sign_in(page, url, ada)
    page.locator("#kb-admin").wait_for(timeout=60_000)
    shot(page, "admin-01-sources")

    field(page, "kb-source-spec").fill(str(folder))
    page.locator("#kb-source-test").click()
    tested = page.locator("#kb-source-test-result")
    wait_until(lambda: "orchard_rota.md" in tested.inner_text(), 120, "the test connection listing")
    assert "nothing was ingested" in tested.inner_text()

    page.locator("#kb-source-add").click()
    wait_until(
        lambda: "added to default" in page.locator("#kb-source-status").inner_text(), 120, "the source"
    )
    source_id = field(page, "kb-source-id").input_value()
    assert source_id
    card = page.locator(f'.kb-job[data-source="{source_id}"]').first
    seen: list[tuple[str, str]] = []

    def done() -> bool:
        if card.count():
            seen.append(
                (card.get_attribute("data-status"), card.locator(".kb-bar").get_attribute("aria-valuenow"))
            )
        return bool(seen) and seen[-1][0] == "succeeded"

    wait_until(done, 300, "the sync job to finish")
    assert seen[-1] == ("succeeded", "100"), seen
    assert all(status in ("queued", "running", "succeeded") for status, _ in seen), seen
    assert "added 1" in card.inner_text() and "failed 0" in card.inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    console_png = shot(page, "admin-02-source-done")
    page.get_by_role("tab", name="Documents").click()
    field(page, "kb-docs-search").fill("orchard")
    page.locator("#kb-docs-refresh").click()
    table = page.locator("#kb-docs-table")
    wait_until(lambda: "Orchard rota" in table.inner_text(), 60, "the document in the table")
    assert "indexed" in table.inner_text() and "documents" in page.locator("#kb-docs-info").inner_text()
    shot(page, "admin-03-documents")

    # A hostile title and text are shown as characters: no script runs, nothing is fetched.
    field(page, "kb-docs-search").fill("zebra")
    page.locator("#kb-docs-refresh").click()
    wait_until(lambda: "Zebra" in table.inner_text(), 60, "the hostile document")
    table.locator("[role=gridcell]", has_text="Zebra").first.click()
    wait_until(lambda: field(page, "kb-doc-id").input_value(), 30, "the selected document")
    page.locator("#kb-doc-chunks").click()
    view = page.locator("#kb-doc-chunks-view")
    wait_until(lambda: "Z-42" in view.inner_text(), 60, "the chunks")
    assert "<script>window.__pwned=1</script>" in view.inner_text()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert site["beacon"].hits == []
    if os.environ.get("KB_UPDATE_SCREENSHOTS"):  # the manual's picture; not on every run (it has dates)
        shutil.copyfile(console_png, ROOT / "docs" / "console.png")


def test_admin_issues_and_revokes_a_key_and_its_session_ends(
    new_page: Any, site: dict[str, Any], ada: str
) -> None:
    url = site["server"].url
    admin = new_page()
    admin_sign_in(admin, url, ada)
    admin.get_by_role("tab", name="Users and keys").click()
    admin.get_by_role("tab", name="API keys").click()
    field(admin, "kb-key-user").fill("carol")
    admin.locator("#kb-key-create").click()
    admin.locator("#kb-key-value").wait_for(timeout=60_000)
    key = admin.locator("#kb-key-value").inner_text().strip()
    issued = admin.locator("#kb-key-issued").inner_text()
    assert key.startswith("kb-") and "shown once" in issued
    key_id = issued.split("Key id ")[1].split()[0]

    chat = new_page()
    chat.goto(url + "/")
    chat.locator("input:not([type=password])").first.fill("carol")
    chat.locator("input[type=password]").fill(key)
    chat.locator("input[type=password]").press("Enter")
    chat.locator("#kb-header .kb-user").wait_for(timeout=60_000)

    field(admin, "kb-key-id").fill(key_id)
    admin.locator("#kb-key-revoke").click()
    status = admin.locator("#kb-id-status")
    wait_until(lambda: f"Key {key_id} revoked" in status.inner_text(), 60, "the revocation")
    shot(admin, "admin-04-key-revoked")
    keys = site["api"].get("/keys", params={"limit": 200}).json()["data"]
    assert next(k for k in keys if k["id"] == int(key_id))["active"] is False

    chat.reload()  # the next request of that session: the sign-in form again, not the chat
    chat.locator("input[type=password]").wait_for(timeout=60_000)
    assert chat.locator("#kb-chat").count() == 0
    shot(chat, "admin-05-revoked-session")


def test_an_employee_opening_the_console_is_refused(new_page: Any, site: dict[str, Any]) -> None:
    page = new_page()
    admin_sign_in(page, site["server"].url, "erin")
    refusal = page.locator("#kb-admin-refused")
    refusal.wait_for(timeout=60_000)
    assert "for admins and curators" in refusal.inner_text() and "erin (employee)" in refusal.inner_text()
    assert not page.locator("#kb-admin").is_visible()
    assert page.get_by_role("tab", name="Sources").count() == 0
    shot(page, "admin-06-employee-refused")
