"""The admin console at /admin in a real browser, on the chat's server and fixtures: an admin adds
a folder source and watches its job's bar reach done, then finds the document in the Documents
table (hostile titles and chunks stay text); an admin issues a key, the key's chat session works,
the admin revokes it and the session ends; an employee is refused."""

from __future__ import annotations

import json
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
    job_id = card.get_attribute("data-job")

    # Editing it changes it in place: the same id, its job history, the new schedule.
    page.locator("#kb-sources-table [role=gridcell]", has_text=source_id).first.click()
    status = page.locator("#kb-source-status")
    wait_until(lambda: f"Selected {source_id}" in status.inner_text(), 60, "the selected source")
    assert field(page, "kb-source-spec").input_value() == str(folder)
    field(page, "kb-source-interval").fill("3600")
    page.locator("#kb-source-save").click()
    wait_until(lambda: "changed in place" in status.inner_text(), 60, "the saved source")
    assert field(page, "kb-source-id").input_value() == source_id
    shot(page, "admin-02b-source-edited")
    stored = site["api"].get(f"/sources/{source_id}").json()
    assert (stored["id"], stored["interval_s"], stored["last_job_id"]) == (source_id, 3600, job_id)
    mine = [s for s in site["api"].get("/sources").json()["items"] if s["spec"] == str(folder)]
    assert [s["id"] for s in mine] == [source_id]
    page.get_by_role("tab", name="Documents").click()
    field(page, "kb-docs-search").fill("orchard")
    page.locator("#kb-docs-refresh").click()
    table = page.locator("#kb-docs-table")
    wait_until(lambda: "Orchard rota" in table.inner_text(), 60, "the document in the table")
    assert "indexed" in table.inner_text() and "1 document ·" in page.locator("#kb-docs-info").inner_text()
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


def test_the_console_speaks_chinese_to_a_chinese_browser_and_switches(
    new_page: Any, site: dict[str, Any], ada: str
) -> None:
    page = new_page("zh-CN")
    # Gradio's sign-in form follows the browser's language; our message on it is in both.
    page.goto(site["server"].url + "/admin/")
    page.get_by_text("用户名", exact=True).first.wait_for(timeout=60_000)
    assert page.get_by_role("button", name="登录").count() == 1
    assert "请使用您的用户名和密码" in page.locator("body").inner_text()
    admin_sign_in(page, site["server"].url, ada)
    page.get_by_role("tab", name="数据源").wait_for(timeout=60_000)
    assert "知识库 · 控制台" in page.locator("#kb-admin-header").inner_text()
    assert page.locator("#kb-source-add").inner_text().strip() == "添加数据源"
    assert "来源" in page.locator("#kb-sources-table").inner_text()  # the table's headers too
    for tab in ("文档", "检索测试", "知识库", "用户与密钥", "审计", "用量", "推理池", "质量"):
        assert page.get_by_role("tab", name=tab).count() == 1, tab
    page.get_by_role("tab", name="文档").click()
    info = page.locator("#kb-docs-info")
    wait_until(lambda: "个文档" in info.inner_text(), 60, "the documents in Chinese")
    assert "标题" in page.locator("#kb-docs-table").inner_text()
    shot(page, "admin-07-chinese")
    # A status line made by the server is in Chinese too.
    page.locator("#kb-doc-reindex").click()
    wait_until(
        lambda: "请先在表格中选择" in page.locator("#kb-docs-status-line").inner_text(), 60, "the notice"
    )

    page.locator("#kb-language").get_by_text("English").click()
    page.get_by_role("tab", name="Sources").wait_for(timeout=60_000)
    assert page.locator("#kb-source-add").inner_text().strip() == "Add source"
    page.reload()  # the choice is kept in this browser
    page.locator("#kb-admin-header .kb-user").filter(has_text=ada).wait_for(timeout=60_000)
    page.get_by_role("tab", name="Sources").wait_for(timeout=60_000)
    assert page.get_by_role("tab", name="数据源").count() == 0
    shot(page, "admin-08-switched-to-english")


def test_quality_runs_an_evaluation_like_the_rest_api_and_compares_runs(
    new_page: Any, site: dict[str, Any], ada: str, tmp_path: Path
) -> None:
    items = [
        {"question": "What is the warranty period of the X-200 turbine?", "doc": "warranty"},
        {"question": "How many days of paid vacation does a permanent employee receive?", "doc": "handbook"},
    ]
    golden = tmp_path / "browser-golden.jsonl"
    golden.write_text("".join(json.dumps(it) + "\n" for it in items), encoding="utf-8")
    page = new_page()
    admin_sign_in(page, site["server"].url, ada)
    page.get_by_role("tab", name="Quality").click()
    page.locator("#kb-eval-file input[type=file]").set_input_files(str(golden))
    wait_until(lambda: "browser-golden" in page.locator("#kb-eval-file").inner_text(), 60, "the upload")
    page.locator("#kb-eval-run").click()
    result = page.locator("#kb-eval-result")
    wait_until(lambda: result.count() and "hit@1" in result.inner_text(), 300, "the evaluation")
    text = result.inner_text()
    assert "browser-golden" in text and "2 questions" in text and "hit@5" in text and "MRR" in text
    previous = result.locator('tr[data-metric="hit@1"] td').nth(2)
    assert previous.inner_text().strip() == "—"
    shot(page, "admin-09-quality-first-run")

    # The REST API wrote nothing else: it finds the console's result file and compares with it.
    data_dir = site["folders"]["corpus"].parent / "data"
    files = sorted((data_dir / "eval").glob("*-browser-golden.json"))
    assert len(files) == 1 and files[0].name in text
    first = json.loads(files[0].read_text(encoding="utf-8"))
    r = site["api"].post("/eval", json={"items": items, "name": "browser-golden", "baseline": first})
    assert r.status_code == 200 and r.json()["result_file"] == str(files[0]), r.text
    assert r.json()["gate"]["passed"] and r.json()["retrieval"] == first["retrieval"]

    # The next console run is shown against the previous one.
    page.locator("#kb-eval-run").click()
    wait_until(
        lambda: result.count() and previous.count() and previous.inner_text().strip() not in ("", "—"),
        300,
        "the second evaluation",
    )
    assert previous.inner_text().strip() == f"{first['retrieval']['hit@1']:.4f}"
    assert "No metric fell" in result.inner_text()
    shot(page, "admin-10-quality-against-previous")


def test_the_documents_table_is_readable_at_1280x800(new_page: Any, site: dict[str, Any], ada: str) -> None:
    api = site["api"]
    r = api.post(
        "/documents",
        files={"file": ("broken.pdf", b"%PDF-1.4 not really a pdf " * 40)},
        data={"collection": "lab"},
    )
    assert r.status_code in (200, 201, 202), r.text
    job = r.json()["job"]["id"]
    wait_until(
        lambda: api.get(f"/jobs/{job}").json()["status"] not in ("queued", "running"), 300, "the upload"
    )
    page = new_page("en-US", 1280, 800)
    admin_sign_in(page, site["server"].url, ada)
    page.get_by_role("tab", name="Documents").click()
    table = page.locator("#kb-docs-table")
    wait_until(lambda: "broken.pdf" in table.inner_text(), 60, "the documents")
    heads = table.locator("th")
    titles = [heads.nth(i).inner_text().strip().lower() for i in range(heads.count())]
    at = {name: i for i, name in enumerate(titles) if name}
    assert list(at)[:2] == ["title", "status"], titles
    width = {name: heads.nth(i).bounding_box()["width"] for name, i in at.items()}
    assert width["title"] >= 200 and width["title"] > 2 * width["chunks"], width
    assert width["status"] >= 60 and width["updated"] >= 90, width
    shot(page, "admin-11-documents-1280x800")
    field(page, "kb-docs-search").fill("broken")
    page.locator("#kb-docs-refresh").click()
    info = page.locator("#kb-docs-info")
    wait_until(lambda: info.inner_text().strip().startswith("1 document ·"), 60, "the failed document")
    wait_until(lambda: "Payroll" not in table.inner_text(), 60, "the filtered table")
    row = table.inner_text()
    assert "broken.pdf" in row and "failed" in row and "indexed" not in row
    shot(page, "admin-12-failed-document")
