"""What the chat renders: document and model text as escaped text, Markdown images and links
reduced to words, chips and cards with titles only (no server paths), links only to the
permission-checked routes; the interface language from the browser; the preview's overlap trim."""

from __future__ import annotations

import re

from appliance.ingestion.originals import overlap, version_label
from appliance.rag.answering import FALLBACK_NOTICE
from appliance.rag.conversations import WITHHELD
from ui.chat.render import answer_html, chat_messages, citation_chip, neutralise, passage_href, retry_notice
from ui.i18n import ONE, TEXTS, pick_language, t

DOC = "51df4d62-f308-52f6-9cad-6969359d6831"
CHUNK = "2626022e-649e-55f2-88f3-d05fc4e1228e"
HOSTILE = '<script>window.__pwned=1</script> ![x](http://127.0.0.1:9/beacon) <img src="http://127.0.0.1:9/i">'


def citation(**over: object) -> dict:
    base = {
        "index": 1,
        "title": "Handbook (handbook.md)",
        "uri": "file:///srv/share/hr/handbook.md",
        "page": None,
        "chunk_id": CHUNK,
        "document_id": DOC,
        "snippet": "Every permanent employee receives 27 days of paid vacation.",
        "text": "Every permanent employee receives 27 days of paid vacation.",
        "cited": True,
    }
    return {**base, **over}


def test_neutralise_keeps_words_and_citation_markers_only() -> None:
    text = "See ![diagram](http://evil/x.png) and [the guide](http://evil/g) [1][2] ![r][ref]\n[ref]: http://evil/r"
    out = neutralise(text)
    assert "http" not in out and "diagram" in out and "the guide" in out and "[1][2]" in out
    assert neutralise("<http://evil/auto>") == "http://evil/auto"  # shown as text, escaped later


def test_hostile_text_in_every_field_renders_as_characters() -> None:
    c = citation(title=HOSTILE, snippet=HOSTILE, text=HOSTILE, section=HOSTILE)
    rendered = answer_html(HOSTILE + " [1]", [c], "en", {DOC: {"version": HOSTILE, "updated_at": None}})
    # No tag of the document's survives: only our own markup is left once the escapes are removed.
    tags = set(re.findall(r"<([a-z]+)", rendered))
    assert tags <= {"div", "details", "summary", "span", "b", "br", "blockquote", "a", "sup", "button"}
    assert "&lt;script&gt;" in rendered and "<script" not in rendered and "<img" not in rendered
    assert "http://127.0.0.1:9/beacon" not in rendered  # the image syntax was reduced to its alt text
    hrefs = re.findall(r'href="([^"]*)"', rendered)
    assert hrefs and all(h.startswith(f"/api/v1/documents/{DOC}/") for h in hrefs)


def test_chips_show_titles_never_server_paths() -> None:
    chip = citation_chip(citation(), "en")
    assert "Handbook (handbook.md)" in chip and "/srv/share" not in chip and "file://" not in chip
    assert f"/api/v1/documents/{DOC}/preview?chunk={CHUNK}#kb-hit" in chip
    assert f"/api/v1/documents/{DOC}/original" in chip


def test_a_pdf_citation_opens_the_original_at_its_page() -> None:
    c = citation(uri="upload://default/0123abcd.pdf/warranty.pdf", page=2)
    assert passage_href(c) == f"/api/v1/documents/{DOC}/original#page=2"
    assert "Open at page 2" in citation_chip(c, "en") and "打开第 2 页" in citation_chip(c, "zh")
    assert passage_href(citation(document_id="../../admin")) is None  # only ids make links


def test_only_cited_sources_are_shown_unless_none_is_marked() -> None:
    cited, other = citation(index=1), citation(index=2, title="Other doc", cited=False)
    assert "Other doc" not in answer_html("x [1]", [cited, other], "en")
    unmarked = [citation(cited=False), citation(index=2, title="Other doc", cited=False)]
    assert "Other doc" in answer_html("x", unmarked, "en")


def test_turn_states_become_the_right_messages() -> None:
    turns = [
        {"question": "<b>q</b>", "answer": "", "citations": [], "streaming": True},
        {"question": "q2", "answer": "I don't know.", "citations": []},
        {"question": "q3", "answer": WITHHELD, "citations": []},
        {
            "question": "q4",
            "answer": "",
            "notice": {"key": "busy", "kind": "error", "values": {"when": retry_notice(7.2)}},
        },
        {
            "question": "q5",
            "answer": "",
            "notice": {"key": "quota", "kind": "error", "values": {"when": retry_notice(30000)}},
        },
    ]
    en = [m["content"] for m in chat_messages(turns, "en", WITHHELD)]
    assert en[0] == '<div class="kb-question">&lt;b&gt;q&lt;/b&gt;</div>'
    assert t("en", "thinking") in en[1]
    assert "No evidence" in en[3]
    assert t("en", "withheld") in en[5]
    assert "busy" in en[7] and "Try again in 7 s." in en[7]
    assert "usage limit" in en[9] and "00:00 UTC" in en[9]
    zh = [m["content"] for m in chat_messages(turns, "zh", WITHHELD)]
    assert "没有依据" in zh[3] and "7 秒后重试" in zh[7]


def test_a_fallback_answer_says_so_once_in_the_readers_language() -> None:
    quotes = "加班必须事先获得部门经理审批。 [1]"
    turn = {"question": "加班需要谁审批？", "answer": FALLBACK_NOTICE + quotes, "citations": [citation()]}
    for lang in ("zh", "en"):
        shown = chat_messages([{**turn, "fallback": True}], lang, WITHHELD)[1]["content"]
        assert FALLBACK_NOTICE.strip() not in shown and "加班必须事先获得部门经理审批。" in shown
        assert t(lang, "fallback") in shown


def test_every_text_exists_in_both_languages() -> None:
    # English's singular entries (``<key>_one``) are its own: Chinese has no plural.
    assert {k for k in TEXTS["en"] if not k.endswith(ONE)} == set(TEXTS["zh"])


def test_language_follows_the_browser_unless_chosen() -> None:
    assert pick_language("zh-CN,zh;q=0.9,en;q=0.8") == "zh"
    assert pick_language("en-US,en;q=0.9,zh-CN;q=0.8") == "en"
    assert pick_language("fr-FR,zh-TW;q=0.5") == "zh"
    assert pick_language("de-DE") == "en"
    assert pick_language("zh;q=0,en") == "en"
    assert pick_language(None) == "en"
    assert pick_language("zh-CN", stored="en") == "en"


def test_overlap_between_chunks_is_shown_once() -> None:
    first = "Alpha one. Beta two is a long sentence here."
    second = "Beta two is a long sentence here. Gamma three."
    assert second[overlap(first, second) :] == " Gamma three."
    assert overlap("Completely different text.", "Nothing shared with the first one.") == 0


def test_versions_read_as_dates_or_short_ids() -> None:
    assert version_label("1796223293265422650-475") == "2026-12-02 14:54 UTC"
    assert version_label('"etag-0123456789abcdefghij"') == '"etag-012345678…'
    assert version_label("abc123") == "abc123"
