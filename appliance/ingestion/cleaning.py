"""Clean text and structure before chunking: what a partitioner leaves that readers should not see.

- Web pages lose their navigation, search boxes and footers (``<nav>``, ``<footer>``, ARIA roles
  ``navigation``/``search``/``contentinfo``): the same menu on every page of a site would otherwise
  be indexed once per page and match every question about the site.
- Headings lose markup: Markdown's ``#`` marks and emphasis, and the "¶"/"§" anchors that Sphinx
  and other generators append, so titles and section paths read as plain text.
- Plain-text files get their headings from Markdown ``#`` lines when they have them (their level
  becomes the heading depth). ``unstructured``'s text partitioner otherwise guesses headings by
  counting words, which fails on Chinese, where a whole paragraph has no spaces and so looks like
  a short title: a guessed heading in Chinese that reads as a sentence (it ends with sentence
  punctuation, or has a full stop inside) is demoted to body text.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator
from typing import Any

_ATX = re.compile(r"^[ \t]{0,3}(#{1,6})[ \t]+([^\n]*?)(?:[ \t]+#+)?[ \t]*$")
_ANCHOR = re.compile(r"\s*[¶§]+\s*$")
_EMPHASIS = re.compile(r"^(\*\*|__|\*|_|`)(.+)\1$", re.DOTALL)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_SENTENCE_END = re.compile(r"[。！？；：.!?;:]$")
_INNER_STOP = re.compile(r"[。！？；]")
# Sections of a page that are about the site rather than the page.
_BOILERPLATE = "//nav | //footer | //*[@role='navigation' or @role='search' or @role='contentinfo']"


def strip_boilerplate(html: str) -> str:
    """``html`` without navigation, search and footer sections; unchanged when it cannot be
    parsed (the partitioner then sees the page as it is)."""
    if "<nav" not in html and "role=" not in html and "<footer" not in html:
        return html
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):  # empty, or a str with an encoding declaration
        return html
    dropped = root.xpath(_BOILERPLATE)
    if not dropped:
        return html
    for element in dropped:
        if element.getparent() is not None:
            element.drop_tree()
    return str(lxml.html.tostring(root, encoding="unicode"))


def clean_heading(text: str) -> tuple[str, int | None]:
    """A heading's plain text, and its Markdown level (0 for ``#``) when it had ``#`` marks."""
    level = None
    match = _ATX.match(text)
    if match:
        level, text = len(match.group(1)) - 1, match.group(2)
    text = _ANCHOR.sub("", text).strip()
    emphasis = _EMPHASIS.match(text)
    if emphasis:
        text = emphasis.group(2).strip()
    return text, level


def reads_as_sentence(text: str) -> bool:
    """Whether a Chinese (Japanese, Korean) "heading" is really a sentence of body text."""
    if not _CJK.search(text):
        return False
    text = text.strip()
    return bool(_SENTENCE_END.search(text) or _INNER_STOP.search(text[:-1]))


def clean_elements(elements: Iterable[Any], kind: str) -> Iterator[Any]:
    """The elements of one document with headings cleaned (see the module docstring)."""
    from unstructured.documents.elements import NarrativeText, Title

    marked: int | None = None  # level of the last "#" heading of a plain-text file
    for element in elements:
        text = element.text or ""
        first, _, rest = text.partition("\n")
        if kind == "txt" and _ATX.match(first):
            heading, level = clean_heading(first)
            title = Title(text=heading, metadata=copy.deepcopy(element.metadata), element_id=element.id)
            title.metadata.category_depth = marked = level
            yield title
            if rest.strip():  # a heading line with its paragraph right under it
                yield NarrativeText(rest.strip(), metadata=element.metadata, element_id=f"{element.id}-body")
        elif _is_title(element):
            heading, _ = clean_heading(text)
            if kind == "txt" and reads_as_sentence(heading):
                yield NarrativeText(text, metadata=element.metadata, element_id=element.id)
            else:
                element.text = heading
                if kind == "txt" and marked is not None:
                    # An unmarked heading under a "#" one ("第一章" under "# 采购管理办法") nests in it.
                    element.metadata.category_depth = marked + 1
                yield element
        else:
            if text.endswith("¶"):  # a generator's anchor after an API name
                element.text = _ANCHOR.sub("", text)
            yield element


def _is_title(element: Any) -> bool:
    return type(element).__name__ == "Title"
