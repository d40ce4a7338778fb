"""The three ways to turn the packed sources into an answer, each an async stream of text pieces.

- ``abstractive``: the model's tokens as they come.
- ``extractive``: the sentences of the sources that best answer the question, cited, one piece per
  sentence; no model.
- ``grounded``: the model's answer released sentence by sentence, each only when a source backs it
  and it agrees with the best evidence sentences (its citation repaired to the source that backs
  it); sentences that fail are left out; when none passes, the extractive answer, with a notice. Streaming is per sentence instead of per token: that is the price of
  never showing a claim that is then taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from appliance.domain import ScoredChunk
from appliance.embeddings.base import Embedder
from appliance.inference.base import GenerationParams
from appliance.rag import grounding
from appliance.rag.prompts import FENCE_ECHO
from appliance.rag.render import safe_markdown

FALLBACK_NOTICE = "The generated answer was not supported by the sources, so here is what they say: "


def without_fallback_notice(answer: str) -> str:
    """The quotes of a fallback answer without the notice that opens it: what support is scored
    on, and what a surface that says "replaced by quotes" in its own words (the chat, in the
    reader's language) shows."""
    return answer.removeprefix(FALLBACK_NOTICE)


@dataclass
class Outcome:
    """Filled in while the stream runs; read after it ends."""

    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    fallback: bool = False
    dropped: int = 0  # unsupported sentences withheld (grounded)
    generated: str = ""  # the model's text as it wrote it (before any gate)


async def evidence(
    question: str, question_vector: np.ndarray, hits: list[ScoredChunk], embedder: Embedder
) -> list[grounding.Extract]:
    """The source sentences that best answer the question (embedding + word overlap), headings
    left out and sentences with the kind of fact asked for (a figure, a name) preferred.
    ``question_vector``: the question as retrieval embedded it (not embedded again)."""

    def pick() -> list[grounding.Extract]:
        candidates = quotable_sentences(hits)
        if not candidates:
            return []
        vecs = embedder.embed_documents([s for _, s in candidates])
        return choose_sentences(question, candidates, question_vector, vecs)

    return await asyncio.to_thread(pick)


def quotable_sentences(hits: list[ScoredChunk]) -> list[tuple[int, str]]:
    """(source number, sentence) pairs worth quoting: the sources' sentences (Chinese ones end at
    。！？ too), without the chunks' headings (all of them when nothing else is left), code and
    console lines, or page furniture (contents, navigation, copyright). A definition's term on the
    line before (an API signature such as ``heapq.heapify(x)``) opens its first sentence: the
    description alone ("Transform list x into a heap") does not name what it describes."""
    split: list[tuple[int, str]] = []
    for i, hit in enumerate(hits, start=1):
        term: str | None = None
        for raw in hit.chunk.text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if _TERM.match(line) and not _CODE.search(line) and not is_heading(line, hit.chunk):
                term = line
                continue
            if _CODE.search(line):
                term = None
                continue
            for n, (_, sentence) in enumerate(grounding.candidate_sentences([line])):
                if _BOILERPLATE.search(sentence):
                    continue
                split.append((i, f"{term}: {sentence}" if n == 0 and term else sentence))
            term = None
    quotable = [(i, s) for i, s in split if not is_heading(s.partition(": ")[2] or s, hits[i - 1].chunk)]
    return quotable or split


# A definition's term on a line of its own (API references): "heapq.heapify(x)", "csv.QUOTE_ALL",
# "class csv.DictReader(f, fieldnames=None)", "exception json.JSONDecodeError(msg, doc, pos)".
_TERM = re.compile(
    r"^(?:(?:class|exception|async|classmethod|staticmethod|abstractmethod|property)\s+|@)?"
    r"(?:(?:[A-Za-z_]\w*\.)+[A-Za-z_]\w*(?:\(.*\))?|[A-Za-z_]\w*\(.*\))(?:\s*->\s*\S.*)?$"
)
# Code and console lines (examples, not statements): prompts, comments, assignments, braces.
_CODE = re.compile(r"^(?:>>>|\.\.\.(?:\s|$)|\$\s|#\s|//\s)|^[\w.\[\]'\"]+\s*[-+*/]?=\s|[{}]$|^[)}\]]")
# Page furniture that survives cleaning; never an answer.
_BOILERPLATE = re.compile(
    r"^(?:table of contents|contents|on this page|previous topic|next topic|this page|navigation|"
    r"skip to (?:main )?content|back to top|show source|report a bug|source code:|目录|上一页|下一页|"
    r"返回顶部)|©|\bcopyright\b|\ball rights reserved\b|版权所有",
    re.IGNORECASE,
)


# Section numbering that only headings start with: "4.1 ", "3) ", "一、", "第三章 ", "Chapter 2".
_NUMBERED_HEADING = re.compile(
    r"^(?:\d+(?:\.\d+)*\.?\s|\d+\)\s|[一二三四五六七八九十]+、|第[一二三四五六七八九十百\d]+[章节条部分篇]\s?|"
    r"(?:chapter|section|part|appendix)\s+\w+)",
    re.IGNORECASE,
)
_TERMINAL = re.compile(r"[.!?。！？；;:：]\s*$")


def is_heading(sentence: str, chunk: Any) -> bool:
    """Whether a candidate "sentence" is one of the chunk's headings rather than a statement: a
    heading of its section path, or a short numbered line without closing punctuation."""
    text = sentence.strip()
    if text in chunk.section_path or text == chunk.section:
        return True
    if _TERMINAL.search(text) or len(text) > 80:
        return False
    return bool(_NUMBERED_HEADING.match(text)) and f"{text}\n" in f"{chunk.text}\n"


# Questions that ask for a figure: an amount, a count, a duration, a date, a share (a version:
# ``_ASKS_VERSION``, looked at first).
_ASKS_FIGURE = re.compile(
    r"\bhow (?:many|much|long|often|far|old|big|large|high|soon)\b|\bwhat (?:percentage|share|number|"
    r"amount|time|year|date|day)\b|^\s*when\b|\b(?:since|until|by) when\b|\bwhich year\b|"
    r"多少|几|多久|多长|多大|多高|多少钱|什么时候|何时|哪一?年|哪一?天|比例|占比|比率|百分",
    re.IGNORECASE,
)
_FIGURE = re.compile(
    r"\d|[零一二两三四五六七八九十百千万]+(?:个|天|年|月|日|周|小时|分钟|次|倍|元|岁|人|家|项|条|级|类|位)|"
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|hundred)\b",
    re.IGNORECASE,
)
# Questions that ask for a name: who, which team or product, where (a place is named too).
_ASKS_NAME = re.compile(
    r"\bwho(?:m|se)?\b|^\s*which\b|\bwhich (?:team|department|company|person|product|tool|system)\b|^\s*where\b|"
    r"谁|哪个部门|哪家|哪个团队|哪里|在哪",
    re.IGNORECASE,
)
_NAME = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][\w-]+|[\u4e00-\u9fff]{2,}(?:部|中心|公司|团队|委员会|小组)")
# Technical questions that ask for an identifier (which function, which exception, how do I ...):
# answered by the sentence that names one (``os.path.join``, ``max_size``, ``heapify(``,
# ``JSONDecodeError``), typically a definition that opens with its term.
_ASKS_EXCEPTION = re.compile(r"\b(?:which|what) (?:\w+ )?(?:exception|error|warning)s?\b", re.IGNORECASE)
_EXCEPTION = re.compile(r"\b[A-Za-z_.]*(?:Error|Exception|Warning)\b")
_WHICH = r"\b(?:which|what) (?:\w+ ){0,2}"
# Asked about these, only a sentence naming an identifier answers (as "which exception").
_CODE_NAMES = r"function|class|method|decorator"
_ASKS_CODE_NAME = re.compile(rf"{_WHICH}(?:{_CODE_NAMES})s?\b", re.IGNORECASE)
_ASKS_IDENTIFIER = re.compile(
    rf"{_WHICH}(?:{_CODE_NAMES}|constant|parameter|argument|attribute|module|option|flag|keyword|"
    r"variable|field|type|set|mode)s?\b|\bhow (?:do|can|should) (?:i|you|we)\b",
    re.IGNORECASE,
)
# "Which version" is answered by a sentence with digits in it (3.10, Windows 11, 2024, V2 版), not
# by a number word ("a function of one argument").
_ASKS_VERSION = re.compile(r"\b(?:which|what) (?:\w+ )?(?:version|release)\b|哪个版本|哪一版", re.IGNORECASE)
_VERSION = re.compile(r"\d")
_IDENTIFIER = re.compile(r"\b[A-Za-z_]\w*\.[A-Za-z_]\w*|\b[a-z]+_\w+|\b\w+\(|\b[a-z]+[A-Z]\w*")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Of a score that is cosine similarity plus word-overlap share (0..2): a sentence without any figure
# cannot answer "how many", however many of the question's words it repeats.
FACT_BONUS = 0.15
NO_FIGURE_MALUS = 0.6


def fact_bonus(question: str, sentence: str) -> float:
    """A bonus for a sentence that carries the kind of fact the question asks for, a malus for
    one that does not: 'how many days' is answered by the sentence with the number, 'which
    exception' by the one that names an exception. The numbers a question gives ("below 95%")
    must be in the sentence for a bonus of their own."""
    numbers = _NUMBER.findall(question)
    bonus = FACT_BONUS if numbers and set(numbers) <= set(_NUMBER.findall(sentence)) else 0.0
    if _ASKS_VERSION.search(question):
        version = _VERSION.search(_without(sentence, numbers))
        return bonus + (FACT_BONUS if version else -NO_FIGURE_MALUS)
    if _ASKS_FIGURE.search(question):
        figure = _FIGURE.search(_without(sentence, numbers))
        return bonus + (FACT_BONUS if figure else -NO_FIGURE_MALUS)
    if _ASKS_EXCEPTION.search(question):
        # As for figures: a sentence naming no exception cannot say which one.
        return bonus + (FACT_BONUS if _EXCEPTION.search(sentence) else -NO_FIGURE_MALUS)
    if _ASKS_CODE_NAME.search(question):
        return bonus + (FACT_BONUS if _IDENTIFIER.search(sentence) else -NO_FIGURE_MALUS)
    if _ASKS_IDENTIFIER.search(question) and _IDENTIFIER.search(sentence):
        return bonus + FACT_BONUS
    if _ASKS_NAME.search(question):
        return bonus + (FACT_BONUS if _NAME.search(sentence) else 0.0)
    return bonus


def _without(sentence: str, numbers: list[str]) -> str:
    """The sentence without the question's own numbers: repeating them is not giving the figure."""
    return _NUMBER.sub(lambda m: " " if m.group() in numbers else m.group(), sentence)


def choose_sentences(
    question: str, candidates: list[tuple[int, str]], question_vec: Any, sentence_vecs: Any, limit: int = 2
) -> list[grounding.Extract]:
    """The candidates (source number, sentence) that answer ``question`` best: embedding
    similarity plus the share of the question's words they contain plus the fact bonus, with a
    small bonus for higher-ranked sources. A second sentence only when nearly as good."""
    return grounding.rank_sentences(
        question, candidates, question_vec, sentence_vecs, limit, bonus=lambda s: fact_bonus(question, s)
    )


def format_evidence(extracts: list[grounding.Extract], hits: list[ScoredChunk]) -> str:
    if not extracts:
        return hits[0].chunk.text.strip()[:400] + " [1]" if hits else ""
    return grounding.format_extract(extracts)


def evidence_pieces(extracts: list[grounding.Extract], hits: list[ScoredChunk]) -> list[str]:
    """:func:`format_evidence` cut into its sentences, each with its citation, for a stream to
    send one by one; joined they are that text."""
    if not extracts:
        return [format_evidence(extracts, hits)]
    return [("" if n == 0 else " ") + grounding.format_extract([e]) for n, e in enumerate(extracts)]


async def extractive(
    question: str, question_vector: np.ndarray, hits: list[ScoredChunk], embedder: Embedder
) -> str:
    return format_evidence(await evidence(question, question_vector, hits, embedder), hits)


async def extractive_stream(
    question: str, question_vector: np.ndarray, hits: list[ScoredChunk], embedder: Embedder
) -> AsyncGenerator[str, None]:
    """The extractive answer sentence by sentence, so a streaming client sees it arrive as a
    stream like the generated modes (the sentences are all chosen before the first is sent).
    Each piece is whole, so it is cleaned whole: no image, link or fence from a document reaches a
    reader, and a piece keeps its closing citation (a stream cleaner must hold a trailing ``[n]``
    until it sees no ``(`` follows)."""
    for piece in evidence_pieces(await evidence(question, question_vector, hits, embedder), hits):
        if cleaned := safe_markdown(piece):
            yield cleaned


async def abstractive(
    pool: Any,
    model: str,
    messages: list[dict[str, str]],
    params: GenerationParams,
    outcome: Outcome,
    user: str | None = None,
) -> AsyncGenerator[str, None]:
    # aclosing, here and by our callers: when the client goes, the generation must close now (the
    # worker stops, the slot is free), not whenever the garbage collector finalises it.
    async with contextlib.aclosing(pool.chat(messages, params, model=model, user=user)) as deltas:
        async for delta in deltas:
            if delta.content:
                outcome.generated += delta.content
                yield delta.content
            if delta.usage:
                outcome.usage = delta.usage


@dataclass
class AnswerCheck:
    """A small model's generated answer judged whole against its sources (``rag.min_answer_support``)."""

    question: str
    question_vector: np.ndarray
    hits: list[ScoredChunk]
    embedder: Embedder
    min_answer_support: float
    outcome: Outcome

    async def held(self, answer: AsyncGenerator[str, None]) -> AsyncGenerator[str, None]:
        """The answer held until it is complete, then shown as it is when :meth:`replacement` finds
        nothing to replace, else the replacement. For small models, whose answers drift often: the
        sentence stream is the price of never showing one."""
        async with contextlib.aclosing(answer) as pieces:
            parts = [piece async for piece in pieces]
        instead = await self.replacement("".join(parts))
        for part in parts if instead is None else [instead]:
            yield part

    async def replacement(self, shown: str) -> str | None:
        """None when a generated answer may stand: the sources back at least
        ``min_answer_support`` of what the model wrote (``outcome.generated``: a grounded answer's
        withheld sentences count, so a drifting model does not pass on its surviving fragments)
        and its figures include one of the best evidence sentences' figures. Else the extractive
        answer with the fallback notice (``outcome.fallback`` set). ``shown``: what the mode made
        of the model's text."""
        outcome = self.outcome
        if outcome.fallback:  # grounded found nothing to release and quoted already
            return None
        written = outcome.generated or shown
        sources = [h.chunk.text for h in self.hits]
        score = grounding.support(written, sources).score if written.strip() else 0.0
        extracts = await evidence(self.question, self.question_vector, self.hits, self.embedder)
        if score >= self.min_answer_support and shown.strip() and _figures_agree(written, extracts):
            return None
        outcome.fallback = True
        outcome.dropped = len(grounding.split_sentences(written))  # none of it is shown
        return FALLBACK_NOTICE + format_evidence(extracts, self.hits)


def _figures_agree(answer: str, extracts: list[grounding.Extract]) -> bool:
    """Whether the answer's figures include one of the best evidence sentences' figures, when both
    have some. Support counts words found anywhere in the sources, so "25 days" (annual leave) for
    parental leave passes it; the sentences that answer the question say "16 weeks"."""
    said = set(_NUMBER.findall(_ECHO.sub("", grounding.strip_citations(answer))))
    evident = {n for e in extracts for n in _NUMBER.findall(e.sentence)}
    return not said or not evident or bool(said & evident)


_ECHO = re.compile(
    rf"{FENCE_ECHO.pattern}|^\s*(?:question|sources?|answer)\s*:\s*", re.IGNORECASE | re.MULTILINE
)


@dataclass
class Gate:
    """What a generated sentence must pass to be shown: backed by a source, and saying something
    beyond the question that agrees with the best evidence sentences."""

    bags: list[set[str]]
    question: set[str]
    evidence: set[str]
    min_support: float

    def release(self, sentence: str) -> str | None:
        """The sentence with a valid citation when it passes, else None."""
        sentence = _ECHO.sub("", sentence).strip()
        tokens = grounding.bag(sentence)
        novel = tokens - self.question
        if not novel:
            return None  # no claim, or the question echoed back
        check = grounding.sentence_support(sentence, self.bags)
        if check.support < self.min_support or check.source is None:
            return None
        if self.evidence and not novel & self.evidence:
            return None  # backed by some source, but not an answer to this question
        n_sources = len(self.bags)
        cited = [i for i in grounding.cited_indices(sentence) if 1 <= i <= n_sources]
        clean = grounding.strip_citations(sentence).rstrip()
        # Keep the model's citation when it names a source that backs the sentence as well.
        best = check.source
        for i in cited:
            if grounding.sentence_support(sentence, [self.bags[i - 1]]).support >= self.min_support:
                best = i
                break
        if clean[-1] in ".!?":
            return f"{clean[:-1]} [{best}]{clean[-1]}"
        return f"{clean} [{best}]"


async def grounded(
    pool: Any,
    model: str,
    messages: list[dict[str, str]],
    params: GenerationParams,
    question: str,
    question_vector: np.ndarray,
    hits: list[ScoredChunk],
    embedder: Embedder,
    min_support: float,
    outcome: Outcome,
    user: str | None = None,
) -> AsyncGenerator[str, None]:
    extracts = await evidence(question, question_vector, hits, embedder)
    q_bag = grounding.bag(question)
    gate = Gate(
        grounding.source_bags([h.chunk.text for h in hits]),
        q_bag,
        set().union(*(grounding.bag(e.sentence) for e in extracts)) - q_bag if extracts else set(),
        min_support,
    )
    buffer = ""
    released = 0

    def complete(text: str) -> tuple[list[str], str]:
        parts = grounding.SPLIT.split(text)
        # The last piece may be a sentence still being written; the rest are finished.
        if len(parts) <= 1:
            return [], text
        return [p for p in parts[:-1] if p.strip()], parts[-1]

    async with contextlib.aclosing(abstractive(pool, model, messages, params, outcome, user)) as pieces:
        async for piece in pieces:
            buffer += piece
            done, buffer = complete(buffer)
            for sentence in done:
                kept = gate.release(sentence.strip())
                if kept is None:
                    outcome.dropped += 1
                    continue
                yield ("" if released == 0 else " ") + kept
                released += 1
    if buffer.strip():
        kept = gate.release(buffer.strip())
        if kept is None:
            outcome.dropped += 1
        else:
            yield ("" if released == 0 else " ") + kept
            released += 1
    if released == 0:
        outcome.fallback = True
        yield FALLBACK_NOTICE + format_evidence(extracts, hits)
