"""The passage preview a citation opens speaks the reader's language (the ``kb-lang`` cookie the
chat's and the console's switches write, else ``Accept-Language``) from the catalogue the chat uses,
and stays what it was: the document's text escaped, no script, the same CSP."""

from __future__ import annotations

from starlette.requests import Request

from appliance.api.routers.originals import _PREVIEW_CSP, render_preview
from appliance.ingestion.originals import Preview, PreviewPart
from appliance.language import LANG_COOKIE, request_language
from ui.i18n import t

HOSTILE = "<script>alert(1)</script> 报销须在 30 天内提交。"


def _request(accept: str | None = None, cookie: str | None = None) -> Request:
    headers = []
    if accept:
        headers.append((b"accept-language", accept.encode()))
    if cookie:
        headers.append((b"cookie", f"{LANG_COOKIE}={cookie}".encode()))
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers})


def _preview() -> Preview:
    parts = [
        PreviewPart("c1", "Intro.", 2, "<b>Travel</b>"),
        PreviewPart("c2", HOSTILE, 3, None),
    ]
    return Preview("d1", "<i>Handbook</i>", "1700000000000000000-1234", "2026-12-01T08:00:00+00:00", parts)


def test_the_preview_language_is_the_cookie_else_the_browsers() -> None:
    def lang(request: Request) -> str:
        return request_language(request.headers, request.cookies)

    assert lang(_request("zh-CN,zh;q=0.9,en;q=0.5")) == "zh"  # the browser's
    assert lang(_request("en-US", cookie="zh")) == "zh"  # the switch's, over the browser's
    assert lang(_request("zh-CN", cookie="en")) == "en"
    assert lang(_request("zh-CN", cookie="fr")) == "zh"  # an unknown choice is ignored
    assert lang(_request("de-DE")) == "en" and lang(_request()) == "en"


def test_the_preview_page_has_chinese_labels_and_escapes_the_document() -> None:
    page = render_preview(_preview(), "c2", "zh")
    assert '<html lang="zh-CN">' in page
    assert "第 2 页" in page and "第 3 页" in page and "版本 2023-11-14 22:13 UTC" in page
    assert "索引于 2026-12-01" in page and ">原始文件</a>" in page
    assert "p. 2" not in page and "original file" not in page and "indexed" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;b&gt;Travel&lt;/b&gt;" in page and "&lt;i&gt;Handbook&lt;/i&gt;" in page
    assert '<section id="kb-hit" class="part hit">' in page and "<mark>" in page
    english = render_preview(_preview(), "c2", "en")
    assert '<html lang="en">' in english and "page 2" in english and ">Original file</a>" in english
    assert "version 2023-11-14 22:13 UTC" in english and "indexed 2026-12-01" in english
    empty = Preview("d2", "Empty", "", None, [])
    assert "（无文本）" in render_preview(empty, None, "zh") and "(no text)" in render_preview(empty, None)


def test_the_preview_and_the_chats_source_card_say_it_with_the_same_entries() -> None:
    page = render_preview(_preview(), None, "zh")
    for key, values in (("page", {"page": 3}), ("indexed", {"date": "2026-12-01"}), ("original", {})):
        assert t("zh", key, **values) in page, key
    assert "script-src" not in _PREVIEW_CSP and _PREVIEW_CSP.startswith("default-src 'none'")
