"""The employees' chat in a real browser against a real server: sign in, pick a knowledge base,
ask (English and Chinese) and watch the answer stream, open a source chip and the original at the
passage, rate an answer with a comment, copy it, stop one, and find the conversation after a
reload; documents one may not read never show; hostile documents run nothing and fetch nothing."""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Any

import httpx
import pytest

from appliance.domain import document_id
from tests.browser.conftest import ROOT, shot, sign_in, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VACATION_Q = "How many days of paid vacation does a permanent employee receive?"
WARRANTY_Q = "What is the warranty period of the X-200 turbine?"
ZH_Q = "加班需要谁审批？"
STORY_Q = "Write a long, detailed story about the backup diesel generator in the Oslo data center."


def choose_collection(page: Any, name: str) -> None:
    box = page.locator("#kb-collection input")
    if box.input_value() == name:
        return
    box.click()
    box.fill(name)  # the dropdown filters its options
    # Click the option: typed text alone shows in the box while the component keeps its old value.
    page.get_by_role("option", name=name, exact=True).click()
    page.locator("#kb-question textarea").click()  # blur: a typed-only value would revert here
    wait_until(lambda: page.locator("#kb-collection input").input_value() == name, 30, f"collection {name}")


def collection_choices(page: Any) -> list[str]:
    page.locator("#kb-collection input").click()
    page.get_by_role("option").first.wait_for()
    names = [o.get_attribute("aria-label") for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    return names


def latest(page: Any) -> Any:
    return page.locator("#kb-chat .message-content").last


def ask(page: Any, question: str, name: str) -> tuple[Any, list[str]]:
    """Ask and wait for the finished answer; returns it and the texts seen while it streamed."""
    before = page.locator(
        "#kb-chat .kb-copy, #kb-chat .kb-notice.kb-empty, #kb-chat .kb-notice.kb-error"
    ).count()
    page.locator("#kb-question textarea").fill(question)
    page.locator("#kb-send").click()
    seen: list[str] = []

    def finished() -> bool:
        message = latest(page)
        text = message.inner_text() if message.count() else ""
        if text and (not seen or seen[-1] != text):
            seen.append(text)
        done = "#kb-chat .kb-copy, #kb-chat .kb-notice.kb-empty, #kb-chat .kb-notice.kb-error"
        return page.locator(done).count() > before

    try:
        wait_until(finished, what=f"the answer to {question!r}")
    finally:
        shot(page, name)  # on a timeout too: what the page showed instead
    return latest(page), seen


def test_employee_asks_opens_sources_rates_copies_stops_and_resumes(
    new_page: Any, site: dict[str, Any]
) -> None:
    url = site["server"].url
    page = new_page("en-US")
    sign_in(page, url, "erin")
    shot(page, "01-signed-in")
    assert "Signed in as erin" in page.locator("#kb-header").inner_text()
    names = collection_choices(page)
    assert {"default", "zh", "lab"} <= set(names) and "finance" not in names  # only what erin may read
    choose_collection(page, "default")

    # An English question: the answer streams (the placeholder, then text growing), then its chips.
    answer, seen = ask(page, WARRANTY_Q, "02-answer")
    assert len(seen) >= 2 and seen[-1] != seen[0], seen
    chips = answer.locator(".kb-chip")
    assert chips.count() >= 1
    assert "file://" not in answer.inner_html() and "/tmp/" not in answer.inner_text()  # titles only
    pdf_chip = answer.locator(".kb-chip", has_text="warranty.pdf").first
    pdf_chip.locator("summary").hover()
    hover = pdf_chip.locator(".kb-hover")
    wait_until(hover.is_visible, 10, "the hover card")
    assert "warranty.pdf" in hover.inner_text()
    shot(page, "03-hover-card")
    pdf_chip.locator("summary").click()
    card = pdf_chip.locator(".kb-card")
    wait_until(card.is_visible, 10, "the source card")
    card_text = card.inner_text()
    assert "warranty.pdf" in card_text and "page" in card_text and "version" in card_text
    shot(page, "04-source-card")
    chat_png = shot(page, "chat")
    if os.environ.get("KB_UPDATE_SCREENSHOTS"):  # the manual's picture; not on every run (it has dates)
        shutil.copyfile(chat_png, ROOT / "docs" / "chat.png")
    link = card.locator("a.kb-open")
    href = link.get_attribute("href")
    assert href.startswith("/api/v1/documents/") and "/original#page=" in href
    pdf = page.context.request.get(url + href.split("#")[0])  # the signed-in browser's cookie
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.body() == (site["folders"]["corpus"] / "warranty.pdf").read_bytes()

    # Copy the answer: the text as shown, without the chips.
    answer.locator(".kb-copy").click()
    copied = wait_until(lambda: page.evaluate("navigator.clipboard.readText()"), 10, "the clipboard")
    assert copied.strip() == answer.locator(".kb-answer").inner_text().strip()

    # Thumbs down with a comment, stored with the chunks retrieved for the answer.
    answer_id_count = len(site["api"].get("/feedback", params={"rating": "down"}).json()["items"])
    page.locator("#kb-chat button[aria-label=Dislike]").first.click()
    page.locator("#kb-feedback-comment textarea").wait_for()
    page.locator("#kb-feedback-comment textarea").fill("The warranty is longer than that.")
    page.locator("#kb-feedback-send").click()
    wait_until(lambda: "saved" in page.locator("#kb-feedback-note").inner_text(), 60, "the feedback note")
    shot(page, "05-feedback")
    downs = site["api"].get("/feedback", params={"rating": "down"}).json()["items"]
    assert len(downs) == answer_id_count + 1
    assert downs[0]["user"] == "erin" and downs[0]["comment"] == "The warranty is longer than that."
    assert downs[0]["question"] == WARRANTY_Q and downs[0]["chunks"]

    # A Chinese question in another knowledge base, with the interface in Chinese.
    page.locator("#kb-language label", has_text="中文").click()
    wait_until(lambda: page.locator("#kb-send").inner_text().strip() == "提问", 30, "the Chinese labels")
    choose_collection(page, "zh")
    answer, _ = ask(page, ZH_Q, "06-chinese-answer")
    assert ZH_Q in page.locator("#kb-chat").inner_text()
    zh_chip = answer.locator(".kb-chip", has_text="员工考勤制度").first
    zh_chip.locator("summary").click()
    passage = zh_chip.locator("a.kb-open")
    assert passage.inner_text() == "打开并定位到该段落"
    preview = page.context.new_page()
    response = preview.goto(url + passage.get_attribute("href"))
    assert response.status == 200
    hit = preview.locator("#kb-hit")
    assert hit.is_visible() and "部门经理审批" in hit.inner_text()
    # The switch's choice (the kb-lang cookie) reaches the preview: its own words are Chinese too.
    assert "原始文件" in preview.locator("header").inner_text()
    shot(preview, "07-preview-at-passage")
    preview.close()

    # Stop: the generation ends now and its model slot is free.
    choose_collection(page, "default")
    messages = page.locator("#kb-chat .message-content").count()
    page.locator("#kb-question textarea").fill(STORY_Q)
    page.locator("#kb-send").click()

    def generating() -> bool:  # the new answer's first tokens are on the screen
        grown = page.locator("#kb-chat .message-content").count() >= messages + 2
        return grown and latest(page).locator(".kb-answer").count() > 0

    wait_until(generating, what="the first tokens")
    page.locator("#kb-stop").click()
    wait_until(lambda: "已停止" in latest(page).inner_text(), 60, "the stopped notice")
    shot(page, "08-stopped")
    admin = {"Authorization": f"Bearer {site['server'].admin_key}"}

    def slot_freed() -> bool:
        metrics = httpx.get(f"{url}/metrics", headers=admin).text
        cancelled = [
            ln
            for ln in metrics.splitlines()
            if ln.startswith("appliance_inference_requests_total{") and 'outcome="cancelled"' in ln
        ]
        in_flight = [ln for ln in metrics.splitlines() if ln.startswith("appliance_in_flight{")]
        return (
            bool(cancelled)
            and float(cancelled[0].split()[-1]) >= 1
            and all(ln.endswith(" 0.0") for ln in in_flight)
        )

    wait_until(slot_freed, 60, "the cancelled generation and a free slot")

    # After a reload the conversation is there (the same one the REST API lists).
    page.reload()
    page.locator("#kb-header .kb-user").wait_for()
    wait_until(
        lambda: WARRANTY_Q[:40] in page.locator("#kb-conversations").inner_text(), 60, "the conversation list"
    )
    wait_until(lambda: page.locator("#kb-chat .kb-chip").count() > 0, 60, "the resumed conversation")
    assert WARRANTY_Q in page.locator("#kb-chat").inner_text()
    shot(page, "09-after-reload")
    rest = httpx.get(f"{url}/api/v1/conversations", headers={"Authorization": f"Bearer {site['erin_key']}"})
    titles = [c["title"] for c in rest.json()["items"]]
    assert any(t.startswith(WARRANTY_Q[:40]) for t in titles)


def test_a_document_one_may_not_read_never_appears(new_page: Any, site: dict[str, Any]) -> None:
    url = site["server"].url
    page = new_page("en-US")
    sign_in(page, url, "erin")
    choose_collection(page, "default")
    answer, _ = ask(page, "What is the merger code name chosen by the board?", "10-unreadable")
    chat = page.locator("#kb-chat").inner_html()
    assert "Bluefin" not in chat and "Board minutes" not in chat and "minutes.md" not in chat
    assert "No evidence" in answer.inner_text()  # a refusal, said as one
    secret = document_id("default", (site["folders"]["secret"] / "minutes.md").resolve().as_uri())
    guessed = str(uuid.uuid4())
    for view in ("original", "preview"):
        denied = page.context.request.get(f"{url}/api/v1/documents/{secret}/{view}")
        missing = page.context.request.get(f"{url}/api/v1/documents/{guessed}/{view}")
        assert denied.status == missing.status == 404
        assert "Bluefin" not in denied.text()
    carol = new_page("en-US")
    sign_in(carol, url, "carol")
    assert carol.context.request.get(f"{url}/api/v1/documents/{secret}/original").status == 200

    # Rename and delete the conversation in the chat: the REST API sees the same.
    rest = {"Authorization": f"Bearer {site['erin_key']}"}

    def titles() -> list[str]:
        return [c["title"] for c in httpx.get(f"{url}/api/v1/conversations", headers=rest).json()["items"]]

    page.locator("#kb-rename-text textarea, #kb-rename-text input").first.fill("Merger question")
    page.locator("#kb-rename").click()
    wait_until(
        lambda: "Merger question" in page.locator("#kb-conversations").inner_text(), 60, "the new title"
    )
    assert "Merger question" in titles()
    page.locator("#kb-delete").click()
    wait_until(
        lambda: "Merger question" not in page.locator("#kb-conversations").inner_text(), 60, "the deletion"
    )
    assert "Merger question" not in titles()
    assert page.locator("#kb-chat .message-content").count() == 0


def test_a_hostile_document_runs_no_script_and_fetches_nothing(new_page: Any, site: dict[str, Any]) -> None:
    url, beacon = site["server"].url, site["beacon"]
    page = new_page("en-US")
    requests: list[str] = []
    page.context.on("request", lambda r: requests.append(r.url))
    sign_in(page, url, "erin")
    choose_collection(page, "lab")
    answer, _ = ask(page, "What is the zebra maintenance code?", "11-hostile-answer")
    chip = answer.locator(".kb-chip").first
    chip.locator("summary").hover()
    chip.locator("summary").click()
    title = chip.locator(".kb-chip-title").inner_text()
    assert "<script>window.__pwned=1</script>" in title and "beacon" not in title  # characters only
    shot(page, "12-hostile-card")
    preview = page.context.new_page()
    preview.goto(url + chip.locator("a.kb-open").get_attribute("href"))
    assert "<script>window.__pwned=1</script>" in preview.locator("#kb-hit").inner_text()
    shot(preview, "13-hostile-preview")
    for p in (page, preview):
        assert p.evaluate("typeof window.__pwned") == "undefined"
        assert p.locator("img[src*='beacon'], a[href*='beacon']").count() == 0
    assert beacon.hits == [] and not [r for r in requests if str(beacon.port) in r]
