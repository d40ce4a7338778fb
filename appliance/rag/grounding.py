"""How much of an answer its sources back, and an extractive answer when they don't back enough.

Support is lexical: for each answer sentence, the share of its content words (stop words removed,
number words folded to digits, citation markers dropped) found in one source it was shown. A small
model's inventions are mostly new words or wrong numbers, which this catches; paraphrase with
synonyms is under-credited, which errs on the safe side (the fallback quotes the sources). It is
deterministic and costs microseconds, so it runs on every answer and on every streamed sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from appliance.rag.prompts import looks_like_instruction
from appliance.text import SPLIT as SPLIT
from appliance.text import bag as bag
from appliance.text import cited_indices as cited_indices
from appliance.text import content_tokens as content_tokens
from appliance.text import coverage as coverage
from appliance.text import split_sentences as split_sentences
from appliance.text import stem
from appliance.text import strip_citations as strip_citations


@dataclass
class SentenceSupport:
    sentence: str
    support: float  # share of its content words found in the best source
    source: int | None  # 1-based index of that source
    weight: int  # content words: long sentences count more


@dataclass
class Support:
    score: float  # weighted mean of sentence supports, 0..1; 1.0 for an answer with no claims
    sentences: list[SentenceSupport]

    def unsupported(self, threshold: float) -> list[SentenceSupport]:
        return [s for s in self.sentences if s.support < threshold]


def sentence_support(sentence: str, source_bags: Sequence[set[str]]) -> SentenceSupport:
    tokens = [stem(t) for t in content_tokens(sentence)]
    if not tokens or not source_bags:
        return SentenceSupport(sentence, 1.0 if not tokens else 0.0, None, len(tokens))
    best, best_i = -1.0, 0
    numbers = [t for t in tokens if t.isdigit()]
    for i, words in enumerate(source_bags):
        share = sum(t in words for t in tokens) / len(tokens)
        if any(n not in words for n in numbers):
            share /= 2  # a wrong number is the typical invention, however many words match
        if share > best:
            best, best_i = share, i
    return SentenceSupport(sentence, best, best_i + 1, len(tokens))


def source_bags(texts: Sequence[str]) -> list[set[str]]:
    return [bag(t) for t in texts]


def support(answer: str, sources: Sequence[str]) -> Support:
    bags = source_bags(sources)
    sentences = [sentence_support(s, bags) for s in split_sentences(answer)]
    weight = sum(s.weight for s in sentences)
    if weight == 0:
        return Support(1.0, sentences)
    return Support(sum(s.support * s.weight for s in sentences) / weight, sentences)


@dataclass
class Extract:
    sentence: str
    source: int  # 1-based
    score: float


def candidate_sentences(sources: Sequence[str]) -> list[tuple[int, str]]:
    """Sentences worth quoting: not headings, not text addressed to the assistant."""
    out = []
    for i, text in enumerate(sources, start=1):
        for sentence in split_sentences(text):
            if len(content_tokens(sentence)) >= 3 and not looks_like_instruction(sentence):
                out.append((i, sentence))
    return out


def best_sentences(
    question: str,
    sources: Sequence[str],
    question_vec: np.ndarray | None = None,
    sentence_vecs: np.ndarray | None = None,
    limit: int = 2,
) -> list[Extract]:
    """The sentences that answer ``question`` best: embedding similarity (when given) plus the
    share of the question's words they contain, with a small bonus for higher-ranked sources."""
    return rank_sentences(question, candidate_sentences(sources), question_vec, sentence_vecs, limit)


def rank_sentences(
    question: str,
    candidates: Sequence[tuple[int, str]],
    question_vec: np.ndarray | None = None,
    sentence_vecs: np.ndarray | None = None,
    limit: int = 2,
    bonus: Callable[[str], float] | None = None,
) -> list[Extract]:
    """The candidates (source number, sentence) that answer ``question`` best: embedding
    similarity (when given) plus the share of the question's words they contain plus ``bonus``
    of the sentence, with a small bonus for higher-ranked sources."""
    if not candidates:
        return []
    q_bag = bag(question)
    scored = []
    for j, (src, sentence) in enumerate(candidates):
        lexical = len(q_bag & bag(sentence)) / max(1, len(q_bag))
        semantic = float(sentence_vecs[j] @ question_vec) if sentence_vecs is not None else 0.0
        extra = bonus(sentence) if bonus is not None else 0.0
        prior = 0.05 / src
        scored.append(Extract(sentence, src, semantic + lexical + extra + prior))
    scored.sort(key=lambda e: e.score, reverse=True)
    picked = scored[:1]
    # A second sentence only when it is nearly as good: more text is more to read, not more truth.
    for extra_pick in scored[1:]:
        if len(picked) >= limit:
            break
        if extra_pick.score >= 0.8 * picked[0].score and extra_pick.sentence != picked[0].sentence:
            picked.append(extra_pick)
    return picked


def format_extract(extracts: Sequence[Extract]) -> str:
    return " ".join(f"{e.sentence.rstrip()} [{e.source}]" for e in extracts)


ELISION = "…"


def focus(text: str, question: str, budget: int, count: Callable[[str], int]) -> str:
    """``text`` cut to the sentences that share most words with ``question``, in their own order,
    within ``budget`` tokens (by ``count``): what a small model needs to read of a source, at a
    fraction of the prefill. Gaps are marked with an ellipsis. Text already within the budget,
    or a budget of 0, is returned whole."""
    if budget <= 0 or count(text) <= budget:
        return text
    sentences = split_sentences(text)
    costs = [count(s) + 1 for s in sentences]  # +1: the space that joins it to the next
    q_bag = bag(question)
    # Ties go to the earlier sentence: a chunk's opening usually says what it is about.
    order = sorted(range(len(sentences)), key=lambda i: (-len(q_bag & bag(sentences[i])), i))
    if costs[order[0]] > budget:  # the best sentence alone is over: its opening words
        words = sentences[order[0]].split()
        while len(words) > 1 and count(" ".join(words)) > budget - 1:
            words = words[: max(1, len(words) * 3 // 4)]
        return " ".join(words) + " " + ELISION
    kept: list[int] = []
    used = 0
    for i in order:
        if used + costs[i] <= budget:
            kept.append(i)
            used += costs[i]
    kept.sort()
    out = []
    for position, i in enumerate(kept):
        if position == 0 and i > 0 or position > 0 and i != kept[position - 1] + 1:
            out.append(ELISION)
        out.append(sentences[i])
    if kept[-1] != len(sentences) - 1:
        out.append(ELISION)
    return " ".join(out)
