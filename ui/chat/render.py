"""What the chat shows, as HTML built from escaped text only.

The Chatbot gets ``render_markdown=False``: Gradio then takes a message as HTML and runs it
through its sanitiser. Every message is built here from ``html.escape``d text, so titles, file
names, chunk text and model output are characters on the screen, never markup: a ``<script>`` in
a document shows as text, and Markdown image or link syntax cannot become an ``<img>`` or ``<a>``
(nothing is parsed as Markdown). Markdown images and links are also reduced to their text
(``neutralise``), because a raw ``![x](http://…)`` in an answer reads badly and may be copied
into a renderer that does load it. The only markup is ours: the answer, its numbered source
chips with their hover cards, and links to the permission-checked original (``/api/v1/documents``).

Employees see titles, never the server's paths or URIs of the documents.
"""

from __future__ import annotations

import html
import re
from datetime import datetime
from typing import Any
from urllib.parse import quote

from appliance.ingestion.originals import version_label
from appliance.rag.answering import without_fallback_notice
from appliance.rag.render import safe_markdown
from ui.i18n import t

_MARKER = re.compile(r"\[(\d{1,3})\]")
_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
SNIPPET_CHARS = 320


def neutralise(text: str) -> str:
    """``text`` with Markdown images, links and link definitions reduced to their words and no
    prompt-fence echo (``appliance.rag.render.safe_markdown``, the one place that decides)."""
    return safe_markdown(text)


def as_text(text: str) -> str:
    """Untrusted text as HTML that shows exactly these characters (newlines kept)."""
    return html.escape(neutralise(text or "")).replace("\n", "<br>")


def _one_line(text: str, limit: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _doc_href(document_id: str, view: str, query: str = "", fragment: str = "") -> str | None:
    if not _ID.match(document_id or ""):
        return None
    href = f"/api/v1/documents/{quote(document_id)}/{view}"
    return href + (f"?{query}" if query else "") + (f"#{fragment}" if fragment else "")


def is_pdf(citation: dict[str, Any]) -> bool:
    return str(citation.get("uri", "")).lower().split("?")[0].endswith(".pdf")


def passage_href(citation: dict[str, Any]) -> str | None:
    """Where "open at the passage" goes: the PDF at its page, else the text preview with the
    cited chunk highlighted and scrolled to."""
    doc = str(citation.get("document_id") or "")
    if is_pdf(citation):
        page = citation.get("page")
        return _doc_href(doc, "original", fragment=f"page={int(page)}" if page else "")
    chunk = str(citation.get("chunk_id") or "")
    if not _ID.match(chunk):
        return _doc_href(doc, "preview")
    return _doc_href(doc, "preview", query=f"chunk={quote(chunk)}", fragment="kb-hit")


def _date(value: Any) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(str(value)).date().isoformat()
    except ValueError:
        return ""


def shown_citations(citations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sources an answer cites; all of them when it marks none (an answer without markers)."""
    cited = [c for c in citations if isinstance(c, dict) and c.get("cited")]
    return cited or [c for c in citations if isinstance(c, dict)]


def citation_chip(citation: dict[str, Any], lang: str, doc: dict[str, Any] | None = None) -> str:
    """One numbered chip: hovering shows title, page and snippet; opening it shows the card with
    the snippet, title, page, version and the links to the original."""
    n = int(citation.get("index") or 0)
    title = html.escape(_one_line(neutralise(str(citation.get("title") or "")), 120)) or "—"
    page = citation.get("page")
    page_text = html.escape(t(lang, "page", page=int(page))) if isinstance(page, int) else ""
    snippet = as_text(_one_line(str(citation.get("snippet") or citation.get("text") or ""), SNIPPET_CHARS))
    meta = [page_text] if page_text else []
    section = citation.get("section")
    if section:
        meta.append(html.escape(_one_line(neutralise(str(section)), 80)))
    if doc:
        if doc.get("version"):
            meta.append(
                f"{html.escape(t(lang, 'version'))} {html.escape(version_label(str(doc['version'])))}"
            )
        if date := _date(doc.get("updated_at")):
            meta.append(html.escape(t(lang, "indexed", date=date)))
    links = []
    passage = passage_href(citation)
    if passage:
        label = t(lang, "open_page", page=int(page)) if is_pdf(citation) and isinstance(page, int) else None
        label = label or t(lang, "open_passage")
        links.append(f'<a class="kb-open" href="{html.escape(passage)}">{html.escape(label)}</a>')
    original = _doc_href(str(citation.get("document_id") or ""), "original")
    if original and not is_pdf(citation):
        links.append(
            f'<a class="kb-original" href="{html.escape(original)}">{html.escape(t(lang, "original"))}</a>'
        )
    hover_page = f" · {page_text}" if page_text else ""
    return (
        f'<details class="kb-chip"><summary><span class="kb-n">{n}</span>'
        f'<span class="kb-chip-title">{title}</span>'
        f'<span class="kb-hover"><b>{title}</b>{hover_page}<br>{snippet}</span></summary>'
        f'<div class="kb-card"><div class="kb-card-title">[{n}] {title}</div>'
        f'<div class="kb-card-meta">{" · ".join(meta)}</div>'
        f'<blockquote class="kb-snippet">{snippet}</blockquote>'
        f'<div class="kb-links">{" ".join(links)}</div></div></details>'
    )


def _answer_body(answer: str) -> str:
    return _MARKER.sub(r'<sup class="kb-ref">[\1]</sup>', as_text(answer))


def answer_html(
    answer: str,
    citations: list[dict[str, Any]],
    lang: str,
    docs: dict[str, dict[str, Any]] | None = None,
    notes: list[str] | None = None,
    streaming: bool = False,
) -> str:
    """An assistant message: the answer, notes under it, the source chips and a copy button."""
    parts = [f'<div class="kb-answer">{_answer_body(answer)}</div>']
    for note in notes or []:
        parts.append(f'<div class="kb-note">{html.escape(note)}</div>')
    chips = [
        citation_chip(c, lang, (docs or {}).get(str(c.get("document_id"))))
        for c in shown_citations(citations)
    ]
    if chips and not streaming:
        parts.append(
            f'<div class="kb-sources"><span class="kb-sources-label">{html.escape(t(lang, "sources"))}</span>'
            + "".join(chips)
            + "</div>"
        )
    if not streaming and answer.strip():
        parts.append(f'<button class="kb-copy" type="button">{html.escape(t(lang, "copy"))}</button>')
    return "".join(parts)


def notice_html(text: str, kind: str = "info") -> str:
    """A message from the appliance (quota, busy, no evidence, stopped), not from the documents."""
    return f'<div class="kb-notice kb-{html.escape(kind)}">{html.escape(text)}</div>'


def question_html(question: str) -> str:
    return f'<div class="kb-question">{as_text(question)}</div>'


# -- turns as Chatbot messages ---------------------------------------------------------------------


def notice_text(lang: str, notice: dict[str, Any]) -> str:
    """A notice stored as a text key and its values, so it follows a change of language."""
    values = dict(notice.get("values") or {})
    if "when" in values and isinstance(values["when"], dict):
        values["when"] = notice_text(lang, values["when"])
    return t(lang, str(notice["key"]), **values)


def retry_notice(seconds: float) -> dict[str, Any]:
    """When to try again, from a Retry-After: in seconds, or at the daily quota's reset."""
    if seconds > 3600:
        return {"key": "retry_at_midnight", "values": {"hours": max(1, round(seconds / 3600))}}
    return {"key": "retry_in", "values": {"seconds": max(1, round(seconds))}}


def assistant_html(turn: dict[str, Any], lang: str, withheld: str) -> str:
    """The assistant's side of a turn: a notice, the streaming answer, or the finished answer."""
    answer = str(turn.get("answer") or "")
    notice = turn.get("notice")
    if notice and not answer:
        return notice_html(notice_text(lang, notice), str(notice.get("kind", "info")))
    if answer.strip() == withheld:
        return notice_html(t(lang, "withheld"), "info")
    if turn.get("streaming"):
        return answer_html(answer, [], lang, streaming=True) if answer else notice_html(t(lang, "thinking"))
    citations = list(turn.get("citations") or [])
    if not citations and not turn.get("stopped"):
        return notice_html(t(lang, "no_evidence"), "empty")
    notes = []
    if turn.get("fallback"):
        # The note below says it in the reader's language; the answer's own (English) notice goes.
        answer = without_fallback_notice(answer)
    if turn.get("support") is not None and citations:
        notes.append(t(lang, "support", share=f"{float(turn['support']):.0%}"))
    if turn.get("fallback"):
        notes.append(t(lang, "fallback"))
    if notice:
        notes.append(notice_text(lang, notice))
    return answer_html(answer, citations, lang, turn.get("docs") or {}, notes)


def chat_messages(turns: list[dict[str, Any]], lang: str, withheld: str) -> list[dict[str, str]]:
    """The Chatbot's value: for each turn the question, then the answer (message 2i+1 is turn i)."""
    out: list[dict[str, str]] = []
    for turn in turns:
        out.append({"role": "user", "content": question_html(str(turn.get("question") or ""))})
        out.append({"role": "assistant", "content": assistant_html(turn, lang, withheld)})
    return out
