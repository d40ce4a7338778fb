"""Structure-aware chunking bounded by the embedder's tokenizer.

``unstructured``'s ``chunk_by_title`` keeps a section's paragraphs, lists and tables with their
heading and packs small sections together; it works in characters, so a second pass measures each
chunk with the embedder's own tokenizer and splits any that would be truncated — at sentence
boundaries first (CJK punctuation included), then at words, then at characters for unspaced text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Sentence ends: Latin punctuation followed by space, or CJK full stops which need no space.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|\n+")
CHARS_PER_TOKEN = 4  # a first guess for chunk_by_title; the token pass below has the last word
MAX_CHARS_PER_TOKEN = 10


@dataclass
class TextChunk:
    text: str
    page: int | None
    section: str | None
    section_path: tuple[str, ...] = ()


def chunk_elements(
    elements: list[dict[str, Any]],
    count_tokens: Callable[[str], int],
    target_tokens: int,
    max_tokens: int,
    overlap_tokens: int = 0,
) -> list[TextChunk]:
    from unstructured.chunking.title import chunk_by_title
    from unstructured.staging.base import elements_from_dicts

    target_tokens = min(target_tokens, max_tokens)
    elems = [e for e in elements_from_dicts(elements) if (e.text or "").strip()]
    if not elems:
        return []
    paths = section_paths(elems)
    max_chars = target_tokens * CHARS_PER_TOKEN
    composite = chunk_by_title(
        elems,
        max_characters=max_chars,
        new_after_n_chars=int(max_chars * 0.8),
        combine_text_under_n_chars=max_chars // 4,
        multipage_sections=True,
    )
    out: list[TextChunk] = []
    # chunk_by_title isolates every table, which leaves its heading alone in a chunk of its own:
    # a chunk of nothing but headings is carried into the next chunk instead.
    carried = ""
    for chunk in composite:
        text = chunk.text.strip()
        if not text:
            continue
        origin = getattr(chunk.metadata, "orig_elements", None) or ()
        if len(text) <= MAX_HEADING_CHARS and origin and all(type(e).__name__ == "Title" for e in origin):
            carried = f"{carried}\n\n{text}".strip()
            continue
        if carried:
            text, carried = f"{carried}\n\n{text}", ""
        # A heading at the very end belongs to what follows it, not to this chunk.
        tail: list[str] = []
        for element in reversed(origin[1:]):
            title = (element.text or "").strip()
            if type(element).__name__ != "Title" or not title or len(title) > MAX_HEADING_CHARS:
                break
            if not text.endswith(title) or len(text) == len(title):
                break
            text = text[: -len(title)].rstrip()
            tail.insert(0, title)
        carried = "\n\n".join(tail)
        page = getattr(chunk.metadata, "page_number", None)
        path = paths.get(origin[0].id, ()) if origin else ()
        section = _section_of(chunk) or (path[-1] if path else None)
        for piece in split_to_tokens(text, count_tokens, target_tokens, overlap_tokens):
            out.append(TextChunk(piece, page, section, path))
    if carried:
        out.append(TextChunk(carried, None, carried.splitlines()[-1][:200], ()))
    return out


MAX_HEADING_CHARS = 300  # a longer "Title" is body text unstructured misclassified


def section_paths(elements: list[Any]) -> dict[str, tuple[str, ...]]:
    """Each element's chain of headings, outermost first. Headings nest by ``category_depth``
    (set by the markdown, HTML and docx partitioners); without it a heading replaces its peer."""
    stack: list[tuple[int, str]] = []
    out: dict[str, tuple[str, ...]] = {}
    for element in elements:
        if type(element).__name__ == "Title" and element.text.strip():
            depth = getattr(element.metadata, "category_depth", None) or 0
            while stack and stack[-1][0] >= depth:
                stack.pop()
            stack.append((depth, element.text.strip()[:200]))
        out[element.id] = tuple(t for _, t in stack)
    return out


def _section_of(chunk: Any) -> str | None:
    for element in getattr(chunk.metadata, "orig_elements", None) or ():
        if type(element).__name__ == "Title" and element.text.strip():
            return str(element.text.strip()[:200])
    return None


def split_to_tokens(
    text: str, count_tokens: Callable[[str], int], limit: int, overlap_tokens: int = 0
) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` tokens, repeating up to ``overlap_tokens``
    of trailing sentences between consecutive pieces."""
    if count_tokens(text) <= limit and len(text) // MAX_CHARS_PER_TOKEN <= limit - 2:
        return [text]
    units = _units(text, count_tokens, limit)
    budget = limit - 2  # room for the special tokens the embedder adds to every input
    pieces: list[str] = []
    current: list[tuple[str, int]] = []
    size = 0
    for unit, n in units:
        if current and size + n > budget:
            pieces.append(_join(u for u, _ in current))
            # carry the tail of the previous piece as overlap
            carry: list[tuple[str, int]] = []
            carried = 0
            for u, m in reversed(current):
                if carried + m > overlap_tokens or carried + m + n > budget:
                    break
                carry.insert(0, (u, m))
                carried += m
            current, size = carry, carried
        current.append((unit, n))
        size += n
    if current:
        pieces.append(_join(u for u, _ in current))
    return [p for p in pieces if p.strip()]


def _join(units: Any) -> str:
    return "".join(units).strip()


def _units(text: str, count_tokens: Callable[[str], int], limit: int) -> list[tuple[str, int]]:
    """Sentences (with their trailing separator), each under ``limit`` tokens."""
    out: list[tuple[str, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        if end > start:
            out.extend(_bounded(text[start:end], count_tokens, limit))
        start = end
    if start < len(text):
        out.extend(_bounded(text[start:], count_tokens, limit))
    return out


def _bounded(sentence: str, count_tokens: Callable[[str], int], limit: int) -> list[tuple[str, int]]:
    # Special tokens ([CLS]/[SEP]) are counted once per piece, so measure the bare sentence cost.
    # WordPiece turns any word over 100 characters into one [UNK]: a floor of one token per
    # MAX_CHARS_PER_TOKEN characters keeps 100k letters without a space from becoming one chunk.
    n = max(count_tokens(sentence) - 2, len(sentence) // MAX_CHARS_PER_TOKEN, 1)
    if n <= limit - 2:
        return [(sentence, n)]
    words = re.split(r"(?<=\s)", sentence)
    if len(words) > 1:
        out: list[tuple[str, int]] = []
        for word in words:
            out.extend(_bounded(word, count_tokens, limit))
        return out
    # One unspaced run (CJK, or 100k letters): halve until it fits.
    mid = len(sentence) // 2
    if mid == 0:
        return [(sentence, n)]
    return _bounded(sentence[:mid], count_tokens, limit) + _bounded(sentence[mid:], count_tokens, limit)
