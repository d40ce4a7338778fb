"""Response shapes of the original-file and preview routes (files and HTML, not JSON)."""

from __future__ import annotations

from typing import Any

ORIGINAL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file: PDFs and plain text inline, anything else as a download.",
        "content": {"application/pdf": {}, "text/plain": {}, "application/octet-stream": {}},
    },
}

PREVIEW_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The document's text as an HTML page without script; `#kb-hit` is the chunk asked for. "
        "Its labels are in the reader's language: the `kb-lang` cookie (`en`, `zh`), else `Accept-Language`.",
        "content": {"text/html": {}},
        "headers": {"Content-Language": {"description": "`en` or `zh`", "schema": {"type": "string"}}},
    },
}
