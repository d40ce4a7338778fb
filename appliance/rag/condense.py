"""Follow-up questions made standalone before retrieval.

"And what does it cover?" retrieves nothing useful on its own. Two ways to fix it:
- ``heuristic``: a question that reads like a follow-up (short, with a pronoun or an "and/what
  about" opening) is searched together with the previous user question. Free, deterministic.
- ``llm``: the chat model rewrites it with a short prompt. Costs one extra generation; with the
  default 135M model the rewrite often drops the subject (see bench/answers.py), so ``heuristic``
  is the default and ``llm`` is for larger models.
"""

from __future__ import annotations

import re
from typing import Any

from appliance.inference.base import GenerationParams
from appliance.rag.prompts import condense_messages

_FOLLOW_UP_START = re.compile(
    r"^\s*(?:and|also|but|so|then|what about|how about|and what|why|how come|same for|what else)\b", re.I
)
_ANAPHORA = re.compile(
    r"\b(?:it|its|it's|they|them|their|theirs|this|that|these|those|he|she|him|her|there|then|"
    r"the same|ones|former|latter)\b",
    re.I,
)


def is_follow_up(question: str) -> bool:
    words = question.split()
    if len(words) > 14:
        return False
    return bool(_FOLLOW_UP_START.search(question) or _ANAPHORA.search(question))


def previous_questions(history: list[dict[str, str]]) -> list[str]:
    return [t["content"] for t in history if t.get("role") == "user" and t.get("content", "").strip()]


def condense_heuristic(history: list[dict[str, str]], question: str) -> str:
    earlier = previous_questions(history)
    if not earlier or not is_follow_up(question):
        return question
    return f"{earlier[-1].strip()} {question.strip()}"


async def condense_llm(
    pool: Any, model: str | None, history: list[dict[str, str]], question: str, user: str | None = None
) -> tuple[str, dict[str, int]]:
    """The model's rewrite, or the heuristic's when the model returns nothing usable."""
    if not previous_questions(history):
        return question, {}
    parts: list[str] = []
    usage: dict[str, int] = {}
    params = GenerationParams(max_tokens=48, temperature=0.0, stop=("\n",))
    async for delta in pool.chat(condense_messages(history, question), params, model=model, user=user):
        parts.append(delta.content)
        usage = delta.usage or usage
    rewritten = "".join(parts).strip().strip('"')
    if len(rewritten.split()) < 3:
        return condense_heuristic(history, question), usage
    return rewritten, usage
