"""Which language (English or Chinese) a person reads, and the few texts the core shows them.

The chat and the console keep their texts in ``ui/i18n.py``; one page is made below the UI: a
cited passage's preview (``GET /api/v1/documents/{id}/preview``, ``appliance/api/routers/
originals.py``), which a citation in the chat opens. ``appliance/`` never imports ``ui/``, so the
language choice and that page's texts live here, and ``ui/i18n.py`` takes both into its one
catalogue: the chat's source cards and the preview say "page", "version" and "indexed" from the same
entries, and a browser gets the same language on both.

The choice: the ``kb-lang`` cookie (path ``/``), written by the language switch of the chat and of
the console, else the browser's ``Accept-Language`` (by quality), else English.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

Lang = Literal["en", "zh"]
DEFAULT: Lang = "en"
LANGUAGES: dict[str, str] = {"en": "English", "zh": "中文"}
LANG_COOKIE = "kb-lang"

# Texts a reader sees on a citation: the chat's source card and the passage preview page.
READER_TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "page": "page {page}",
        "version": "version",
        "indexed": "indexed {date}",
        "original": "Original file",
        "no_text": "(no text)",
    },
    "zh": {
        "page": "第 {page} 页",
        "version": "版本",
        "indexed": "索引于 {date}",
        "original": "原始文件",
        "no_text": "（无文本）",
    },
}


def reader_text(lang: str, key: str, **values: object) -> str:
    """``READER_TEXTS[lang][key]`` (English when the language is unknown), with ``values`` filled in."""
    text = READER_TEXTS.get(lang, READER_TEXTS[DEFAULT])[key]
    return text.format(**values) if values else text


def pick_language(accept_language: str | None, stored: str | None = None) -> Lang:
    """The language to show: the one chosen in this browser before, else the first of the
    browser's ``Accept-Language`` we have (by quality), else English."""
    if stored in LANGUAGES:
        return stored  # type: ignore[return-value]
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag:
            ranked.append((-quality, i, tag.lower()))
    for negative_quality, _, tag in sorted(ranked):
        if negative_quality >= 0:
            continue  # q=0: "not this one"
        base = tag.split("-")[0]
        if base in LANGUAGES:
            return base  # type: ignore[return-value]
    return DEFAULT


def request_language(headers: Mapping[str, str] | None, cookies: Mapping[str, str] | None) -> Lang:
    """The language of one HTTP request: its ``kb-lang`` cookie, else its ``Accept-Language``."""
    return pick_language((headers or {}).get("accept-language"), (cookies or {}).get(LANG_COOKIE))
