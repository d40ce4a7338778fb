"""Structure-aware chunking bounded by the embedder's tokenizer.

A document's elements are grouped into sections by their headings (``Title`` elements; headings
with nothing between them form one heading block). Each section becomes one chunk when it fits,
else several of even size, cut between elements first, then at sentence ends (CJK punctuation
included), then at words, then at characters for unspaced text. The rules that keep chunks
readable on their own:

- Every chunk of a section starts with the section's heading, so a heading never stands alone
  and a continuation chunk still says what it is about (to the embedder, to BM25, to the reader).
- Neighbouring chunks of one section share ``overlap_tokens`` of whole sentences: the end of one
  chunk opens the next, so a fact cut at a chunk boundary is whole in one of them.
- No fragments: sections smaller than a quarter of the target are packed together with their
  neighbours (up to the target), and any chunk still under ``min_tokens`` joins a neighbour (up
  to the embedder's limit), so no chunk is a lone character or a heading.

Sizes are measured with the embedder's own tokenizer, so no chunk is truncated when embedded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Sentence ends: Latin punctuation followed by space, or CJK full stops which need no space.
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])|\n+")
MAX_CHARS_PER_TOKEN = 10
MAX_HEADING_CHARS = 300  # a longer "Title" is body text unstructured misclassified
# Shares of the target size: a section under COMBINE is packed with its neighbours, a chunk under
# MIN is a fragment, a heading over HEADING is too long to repeat on every chunk of its section.
COMBINE_SHARE = 0.25
MIN_SHARE = 0.1
HEADING_SHARE = 0.3
BLOCK_SEPARATOR = "\n\n"


@dataclass
class TextChunk:
    text: str
    page: int | None
    section: str | None
    section_path: tuple[str, ...] = ()


@dataclass
class _Unit:
    """A piece of body text no larger than the budget: a whole element or one of its sentences."""

    text: str
    tokens: int
    block: int  # index of the element it comes from: units of one element join without a break
    page: int | None


@dataclass
class _Section:
    heading: str
    path: tuple[str, ...]
    page: int | None
    blocks: list[tuple[str, int | None]] = field(default_factory=list)


@dataclass
class _Draft:
    text: str
    tokens: int
    page: int | None
    path: tuple[str, ...]
    whole: bool  # the whole section in one chunk: may be packed with its neighbours


def chunk_elements(
    elements: list[dict[str, Any]],
    count_tokens: Callable[[str], int],
    target_tokens: int,
    max_tokens: int,
    overlap_tokens: int = 0,
) -> list[TextChunk]:
    """Chunks of at most ``target_tokens`` (capped at ``max_tokens``, the embedder's limit) of
    the elements (``unstructured`` element dicts) of one document; see the module docstring."""
    from unstructured.staging.base import elements_from_dicts

    target = min(target_tokens, max_tokens)
    elems = [e for e in elements_from_dicts(elements) if (e.text or "").strip()]
    if not elems:
        return []

    def bare(text: str) -> int:
        # Special tokens ([CLS]/[SEP]) come once per chunk, not once per part of it.
        return max(count_tokens(text) - 2, len(text) // MAX_CHARS_PER_TOKEN, 1)

    drafts: list[_Draft] = []
    for part in _sections(elems):
        drafts.extend(_chunk_section(part, bare, count_tokens, target, overlap_tokens))
    drafts = _pack_small(
        drafts, bare, target, int(target * COMBINE_SHARE), int(target * MIN_SHARE), max_tokens
    )
    out: list[TextChunk] = []
    for d in drafts:
        section = d.path[-1] if d.path else None
        if count_tokens(d.text) > max_tokens:  # the parts' counts were a hair under the whole's
            out.extend(
                TextChunk(p, d.page, section, d.path) for p in split_to_tokens(d.text, count_tokens, target)
            )
        else:
            out.append(TextChunk(d.text, d.page, section, d.path))
    return out


def section_paths(elements: list[Any]) -> dict[str, tuple[str, ...]]:
    """Each element's chain of headings, outermost first. Headings nest by ``category_depth``
    (set by the markdown, HTML and docx partitioners); without it a heading replaces its peer."""
    stack: list[tuple[int, str]] = []
    out: dict[str, tuple[str, ...]] = {}
    for element in elements:
        if _is_heading(element):
            depth = getattr(element.metadata, "category_depth", None) or 0
            while stack and stack[-1][0] >= depth:
                stack.pop()
            stack.append((depth, element.text.strip()[:200]))
        out[element.id] = tuple(t for _, t in stack)
    return out


def _is_heading(element: Any) -> bool:
    text = (element.text or "").strip()
    return type(element).__name__ == "Title" and 0 < len(text) <= MAX_HEADING_CHARS


def _sections(elements: list[Any]) -> list[_Section]:
    paths = section_paths(elements)
    sections: list[_Section] = []
    current: _Section | None = None
    for element in elements:
        text = element.text.strip()
        page = getattr(element.metadata, "page_number", None)
        if _is_heading(element):
            if current is not None and not current.blocks and current.heading:
                # Headings with nothing between them open one section together.
                current.heading = f"{current.heading}{BLOCK_SEPARATOR}{text}"
                current.path = paths[element.id]
                continue
            current = _Section(text, paths[element.id], page)
            sections.append(current)
            continue
        if current is None:
            current = _Section("", paths[element.id], page)
            sections.append(current)
        current.blocks.append((text, page))
    return sections


def _chunk_section(
    section: _Section,
    bare: Callable[[str], int],
    count_tokens: Callable[[str], int],
    target: int,
    overlap_tokens: int,
) -> list[_Draft]:
    budget = target - 2  # the special tokens every chunk carries
    heading, blocks = section.heading, list(section.blocks)
    head_tokens = bare(heading) if heading else 0
    if not blocks or head_tokens > target * HEADING_SHARE:
        # A heading block with no body, or too long to repeat: it is body text of its own.
        blocks = [(heading, section.page), *blocks] if heading else blocks
        heading, head_tokens = "", 0
    prefix = f"{heading}{BLOCK_SEPARATOR}" if heading else ""
    room = budget - head_tokens
    units: list[_Unit] = []
    for index, (text, page) in enumerate(blocks):
        n = bare(text)
        if n <= room:
            units.append(_Unit(text, n, index, page))
        else:
            units.extend(_Unit(t, m, index, page) for t, m in _units(text, count_tokens, room + 2))
    total = sum(u.tokens for u in units)
    if total <= room:
        text = prefix + _join(units)
        return [_Draft(text, head_tokens + total, section.page or units[0].page, section.path, True)]
    overlap = min(overlap_tokens, room // 4)
    groups = _pack(units, room - overlap)
    drafts = []
    previous: list[_Unit] = []
    for group in groups:
        tail = _tail(previous, overlap, count_tokens)
        body = _join(tail + group) if tail and tail[-1].block == group[0].block else _join(group)
        if tail and tail[-1].block != group[0].block:
            body = f"{_join(tail)}{BLOCK_SEPARATOR}{body}"
        tokens = head_tokens + sum(u.tokens for u in tail + group)
        drafts.append(_Draft(prefix + body, tokens, group[0].page, section.path, False))
        previous = group
    return drafts


def _tail(units: list[_Unit], overlap: int, count_tokens: Callable[[str], int]) -> list[_Unit]:
    """The last whole sentences of ``units`` that fit in ``overlap`` tokens."""
    if overlap <= 0 or not units:
        return []
    last = units[-1]
    whole = _units(last.text, count_tokens, len(last.text) + 2)  # sentences, however long
    return _last_fitting([_Unit(t, m, last.block, last.page) for t, m in whole], overlap)


def _last_fitting(units: Sequence[_Unit], budget: int) -> list[_Unit]:
    """The longest run at the end of ``units`` within ``budget`` tokens."""
    tail: list[_Unit] = []
    size = 0
    for unit in reversed(units):
        if size + unit.tokens > budget:
            break
        tail.insert(0, unit)
        size += unit.tokens
    return tail


def _pack(units: Sequence[_Unit], budget: int) -> list[list[_Unit]]:
    """Consecutive units in groups of at most ``budget`` tokens, of about even size: a section of
    1.1 budgets becomes two halves, not a full chunk and a sliver."""
    total = sum(u.tokens for u in units)
    even = math.ceil(total / max(1, math.ceil(total / max(1, budget))))
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    size = 0
    for unit in units:
        if current and (size + unit.tokens > budget or size >= even):
            groups.append(current)
            current, size = [], 0
        current.append(unit)
        size += unit.tokens
    if current:
        groups.append(current)
    return groups


def _join(units: Sequence[_Unit]) -> str:
    parts: list[str] = []
    for i, unit in enumerate(units):
        if i and unit.block != units[i - 1].block:
            parts[-1] = parts[-1].rstrip()
            parts.append(BLOCK_SEPARATOR)
        parts.append(unit.text)
    return "".join(parts).strip()


def _pack_small(
    drafts: list[_Draft], bare: Callable[[str], int], target: int, combine: int, minimum: int, limit: int
) -> list[_Draft]:
    """Small whole sections packed with the next ones up to ``target``; then fragments under
    ``minimum`` joined to the smaller neighbour up to ``limit``."""
    packed: list[_Draft] = []
    for d in drafts:
        last = packed[-1] if packed else None
        if last and last.whole and d.whole and last.tokens < combine and last.tokens + d.tokens <= target - 2:
            packed[-1] = _merged(last, d, bare)
        else:
            packed.append(d)
    out: list[_Draft] = []
    i = 0
    while i < len(packed):
        d = packed[i]
        if d.tokens < minimum and len(packed) > 1:
            before = out[-1] if out else None
            after = packed[i + 1] if i + 1 < len(packed) else None
            fits_before = before is not None and before.tokens + d.tokens <= limit - 2
            fits_after = after is not None and after.tokens + d.tokens <= limit - 2
            if fits_before and before and (not fits_after or not after or before.tokens <= after.tokens):
                out[-1] = _merged(before, d, bare)
                i += 1
                continue
            if fits_after and after:
                packed[i + 1] = _merged(d, after, bare)
                i += 1
                continue
        out.append(d)
        i += 1
    return out


def _merged(first: _Draft, second: _Draft, bare: Callable[[str], int]) -> _Draft:
    text = f"{first.text}{BLOCK_SEPARATOR}{second.text}"
    # A chunk that spans sections belongs to the headings they share.
    common = 0
    while common < min(len(first.path), len(second.path)) and first.path[common] == second.path[common]:
        common += 1
    return _Draft(
        text, bare(text), first.page or second.page, first.path[:common], first.whole and second.whole
    )


def split_to_tokens(
    text: str, count_tokens: Callable[[str], int], limit: int, overlap_tokens: int = 0
) -> list[str]:
    """Split ``text`` into pieces of at most ``limit`` tokens and about even size, repeating up
    to ``overlap_tokens`` of trailing sentences between consecutive pieces."""
    if count_tokens(text) <= limit and len(text) // MAX_CHARS_PER_TOKEN <= limit - 2:
        return [text]
    budget = limit - 2  # room for the special tokens the embedder adds to every input
    units = [_Unit(t, n, 0, None) for t, n in _units(text, count_tokens, limit)]
    overlap = min(overlap_tokens, budget // 4)
    pieces: list[str] = []
    previous: list[_Unit] = []
    for group in _pack(units, budget - overlap):
        carry = _last_fitting(previous, overlap) if overlap > 0 else []
        pieces.append(_join(carry + group))
        previous = group
    return [p for p in pieces if p.strip()]


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
