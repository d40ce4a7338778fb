"""Element cleaning: titles without Markdown marks or anchors, headings of plain-text files from
their "#" lines, Chinese sentences that unstructured took for titles demoted, site navigation
dropped from web pages."""

from __future__ import annotations

from unstructured.documents.elements import NarrativeText, Text, Title

from appliance.ingestion.cleaning import clean_elements, clean_heading, strip_boilerplate


def kinds(elements: list) -> list[tuple[str, str, int | None]]:
    return [(type(e).__name__, e.text, e.metadata.category_depth) for e in elements]


def test_headings_lose_markdown_marks_and_anchors() -> None:
    assert clean_heading("# AI Infra研究报告") == ("AI Infra研究报告", 0)
    assert clean_heading("### 4.1 市场规模分析 ###") == ("4.1 市场规模分析", 2)
    assert clean_heading("json — JSON encoder and decoder¶") == ("json — JSON encoder and decoder", None)
    assert clean_heading("**Summary**") == ("Summary", None)
    assert clean_heading("#hashtag") == ("#hashtag", None)  # no space: not a heading mark


def test_plain_text_headings_come_from_hash_lines_and_nest() -> None:
    elements = [
        Title("# 采购管理办法"),
        Title("第一章 总则"),  # unmarked, under a "#" heading: nested in it
        Title(
            "第一条 为规范采购行为，降低采购成本，制定本办法。"
        ),  # a sentence unstructured took for a title
        Text("## 2. 采购方式"),
        NarrativeText("单笔采购金额在5万元以下的，可由需求部门直接采购。"),
    ]
    assert kinds(list(clean_elements(elements, "txt"))) == [
        ("Title", "采购管理办法", 0),
        ("Title", "第一章 总则", 1),
        ("NarrativeText", "第一条 为规范采购行为，降低采购成本，制定本办法。", None),
        ("Title", "2. 采购方式", 1),
        ("NarrativeText", "单笔采购金额在5万元以下的，可由需求部门直接采购。", None),
    ]


def test_a_hash_line_with_its_paragraph_below_is_split() -> None:
    out = list(clean_elements([NarrativeText("## Scope\nThis policy covers every site.")], "txt"))
    assert kinds(out) == [("Title", "Scope", 1), ("NarrativeText", "This policy covers every site.", None)]
    assert out[0].id != out[1].id


def test_titles_of_other_formats_are_only_cleaned() -> None:
    out = list(clean_elements([Title("Random numbers¶"), NarrativeText("secrets.choice(seq)¶")], "html"))
    assert kinds(out) == [("Title", "Random numbers", None), ("NarrativeText", "secrets.choice(seq)", None)]
    # An English title ending in a question mark stays a title (the sentence rule is for CJK).
    out = list(clean_elements([Title("How many bytes should tokens use?")], "txt"))
    assert type(out[0]).__name__ == "Title"


def test_site_navigation_and_footer_are_dropped_from_pages() -> None:
    page = (
        "<html><body><div role='navigation'><ul><li>index</li><li>modules |</li></ul></div>"
        "<nav><a href='/'>Home</a></nav><h1>secrets</h1><p>Generate secure tokens.</p>"
        "<footer>© Copyright 2001</footer></body></html>"
    )
    cleaned = strip_boilerplate(page)
    assert "Generate secure tokens." in cleaned and "<h1>secrets</h1>" in cleaned
    assert "modules |" not in cleaned and "Home" not in cleaned and "Copyright" not in cleaned
    plain = "<html><body><p>No navigation here.</p></body></html>"
    assert strip_boilerplate(plain) == plain
