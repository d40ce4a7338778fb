"""Word-level text helpers shared by retrieval and the answer stage: sentence splitting, content
words (stop words out, number words to digits, CJK as character pairs) and the share of a query's
words a text contains.

Retrieval uses the word share in its relevance floor and the answer stage in grounding and sentence
choice; it lives here, below both, because retrieval must not import the answer stage.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_CITE = re.compile(r"\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]")
# Sentence ends: Latin punctuation followed by space/end, a CJK full stop, exclamation, question mark
# or semicolon (no space follows those), or a line break. Decimal points ("3.2 MW") stay.
_CITE_AFTER = r"(?:\s*\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\])?"
# Chinese sentences end at 。！？ with no space after. Not at ；: its clauses share their context ("员工
# 乘坐火车的，可乘坐二等座；部门经理……可乘坐一等座。" answers a question about managers on trains only whole).
SPLIT = re.compile(rf"(?<=[.!?]){_CITE_AFTER}\s+|(?<=[。！？]){_CITE_AFTER}\s*(?=\S)|\n+")

# fmt: off
STOP_WORDS = frozenset(
    """
    a an the and or but if then else of to in on at by for with from as into onto about over under
    is are was were be been being am do does did doing have has had having it its this that these
    those there here which who whom whose what when where why how i you he she we they me him her us
    them my your his our their mine yours not no nor so than too very can could should would may
    might must shall will just also only any all each every some such both either neither one per up
    down out off again further once s t don according source sources document documents answer
    question based provided text information sure yes ok okay hello hi thanks thank please well
    """.split()  # noqa: SIM905
)
# fmt: on
_NUMBERS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
}  # fmt: skip


def strip_citations(text: str) -> str:
    return re.sub(r"[ \t]+([.!?,;:])", r"\1", _CITE.sub("", text)).replace("  ", " ")


def cited_indices(text: str) -> list[int]:
    """Source numbers an answer cites, in first-mention order: "[1]", "[1, 3]", "[2][3]"."""
    seen: list[int] = []
    for marker in _CITE.findall(text):
        for n in re.findall(r"\d+", marker):
            if int(n) not in seen:
                seen.append(int(n))
    return seen


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in SPLIT.split(text) if s and s.strip()]


_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")


def _cjk_grams(run: str) -> list[str]:
    # No spaces between CJK words: overlapping character pairs stand in for words.
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


def content_tokens(text: str) -> list[str]:
    out = []
    for word in _WORD.findall(strip_citations(text).lower()):
        if _CJK.search(word):
            for part in re.split(f"({_CJK.pattern})", word):
                if part and _CJK.fullmatch(part):
                    out.extend(_cjk_grams(part))
                elif part:
                    out.append(_NUMBERS.get(part, part))
            continue
        word = _NUMBERS.get(word, word)
        if word not in STOP_WORDS and (len(word) > 1 or word.isdigit()):
            out.append(word)
    return out


def coverage(query: str, text: str) -> float:
    """Share of the query's content words found in ``text``."""
    q = bag(query)
    return len(q & bag(text)) / len(q) if q else 0.0


def stem(token: str) -> str:
    # Plural and verb endings only: enough to match "approves" with "approval"'s sentence mates.
    for suffix in ("ies", "es", "s", "ed", "ing"):
        if len(token) > len(suffix) + 3 and token.endswith(suffix):
            return token[: -len(suffix)]
    return token


def bag(text: str) -> set[str]:
    return {stem(t) for t in content_tokens(text)}
