"""A document's original file and its text preview at the cited passage, for its readers only.

- ``GET /api/v1/documents/{id}/original``: the file, as it is now at its source (folder or
  upload). PDFs and plain text open in the browser (a citation links a PDF with ``#page=N``);
  anything else is downloaded, so an HTML or SVG original never runs as this site.
- ``GET /api/v1/documents/{id}/preview?chunk=<chunk id>``: the document as the index holds it,
  rendered as TEXT (escaped; never the document's own markup), the chunk highlighted and scrolled
  to with ``#kb-hit``. The page has no script and may load nothing (CSP ``default-src 'none'``).
  Its own few words ("page", "version", "indexed", "Original file") are in the reader's language:
  the ``kb-lang`` cookie the chat's and the console's language switch write, else the browser's
  ``Accept-Language`` (``appliance/language.py``, which the UI's catalogue also uses).

Both answer 404 to anyone who may not read the document, exactly as for an id that does not exist.
Callers authenticate with a Bearer key or with the UI's sign-in cookie (links in the chat), which
``ui.app.mount_ui`` resolves through ``app.state.ui_session``; the cookie is SameSite=Strict, so
another site cannot make a signed-in browser fetch these.
"""

from __future__ import annotations

import asyncio
import html
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from appliance.api.deps import OriginalsDep, SignedInDep
from appliance.api.schemas.common import COMMON_ERRORS, error_responses
from appliance.api.schemas.originals import ORIGINAL_RESPONSES, PREVIEW_RESPONSES
from appliance.ingestion.originals import Preview, version_label
from appliance.language import Lang, reader_text, request_language

router = APIRouter(
    prefix="/api/v1/documents", tags=["documents"], responses={**COMMON_ERRORS, **error_responses(404)}
)

_NO_SNIFF = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private",
}
_PREVIEW_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"


# A Bearer key or the UI sign-in cookie: the chat's links carry no key.
ReaderDep = SignedInDep


def _disposition(kind: str, filename: str) -> str:
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("?", "_")
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


@router.get(
    "/{doc_id}/original",
    summary="The original file of a document you may read",
    responses=ORIGINAL_RESPONSES,
)
async def original(doc_id: str, originals: OriginalsDep, principal: ReaderDep) -> Response:
    found = await asyncio.to_thread(originals.original, principal, doc_id)
    headers = {
        **_NO_SNIFF,
        "Content-Disposition": _disposition("inline" if found.inline else "attachment", found.filename),
    }
    if found.media_type != "application/pdf":
        # A PDF viewer cannot run sandboxed; everything else gets no script and no fetches.
        headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    media_type = "text/plain; charset=utf-8" if found.media_type == "text/plain" else found.media_type
    return Response(found.data, media_type=media_type, headers=headers)


@router.get(
    "/{doc_id}/preview",
    summary="A document you may read as text, with a chunk highlighted",
    responses=PREVIEW_RESPONSES,
)
async def preview(
    doc_id: str,
    request: Request,
    originals: OriginalsDep,
    principal: ReaderDep,
    chunk: Annotated[str | None, Query(max_length=64, description="The chunk to highlight.")] = None,
) -> HTMLResponse:
    found = await asyncio.to_thread(originals.preview, principal, doc_id)
    lang = request_language(request.headers, request.cookies)
    headers = {
        **_NO_SNIFF,
        "Content-Security-Policy": _PREVIEW_CSP,
        "Content-Language": lang,
        "Vary": "Accept-Language, Cookie",
    }
    return HTMLResponse(render_preview(found, chunk, lang), headers=headers)


def render_preview(preview: Preview, chunk: str | None, lang: Lang = "en") -> str:
    """The preview page in ``lang``. Every piece of the document goes through ``html.escape``."""
    e = html.escape
    sections = []
    for part in preview.parts:
        hit = part.chunk_id == chunk
        where = [e(reader_text(lang, "page", page=part.page))] if part.page else []
        if part.section:
            where.append(e(part.section))
        label = f'<div class="where">{" · ".join(where)}</div>' if where else ""
        body = e(part.text)
        attrs = ' id="kb-hit" class="part hit"' if hit else ' class="part"'
        if hit:
            body = f"<mark>{body}</mark>"
        sections.append(f'<section{attrs}>{label}<div class="text">{body}</div></section>')
    meta: list[str] = []
    if preview.version:
        meta.append(f"{e(reader_text(lang, 'version'))} {e(version_label(preview.version))}")
    if preview.updated_at:
        meta.append(e(reader_text(lang, "indexed", date=preview.updated_at[:10])))
    original = f"/api/v1/documents/{quote(preview.document_id)}/original"
    meta.append(f'<a href="{e(original)}">{e(reader_text(lang, "original"))}</a>')
    empty = f"<p>{e(reader_text(lang, 'no_text'))}</p>"
    return (
        f'<!DOCTYPE html><html lang="{_HTML_LANG[lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(preview.title)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>{e(preview.title)}</h1><p>{' · '.join(meta)}</p></header>"
        f"<main>{''.join(sections) or empty}</main></body></html>"
    )


_HTML_LANG: dict[str, str] = {"en": "en", "zh": "zh-CN"}


_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","Noto Sans",sans-serif;max-width:52rem;margin:2rem auto;
padding:0 1rem;line-height:1.6;color:#1f2328}
header{border-bottom:1px solid #d0d7de;margin-bottom:1rem}h1{font-size:1.4rem;margin:0 0 .25rem}
header p{color:#57606a;font-size:.9rem}.part{margin:0 0 1rem}.text{white-space:pre-wrap}
.where{color:#57606a;font-size:.8rem}.hit{background:#fff8c5;border-left:4px solid #d4a72c;padding:.5rem}
mark{background:transparent;color:inherit}
"""
