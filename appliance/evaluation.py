"""Retrieval and answer evaluation over a labelled question set.

A set is JSON lines ``{"question", "doc", "answer_any": [...]}``. Retrieval is judged by document:
a result is a hit when its uri or title contains ``doc``. Generation, when run, is judged by whether
the answer contains any of ``answer_any`` (case-insensitive) and whether a citation is a hit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from appliance.domain import InvalidRequest

# (question, k) -> citation dicts, best first
SearchFn = Callable[[str, int], list[dict[str, Any]]]
# question -> (answer, citation dicts)
AskFn = Callable[[str], tuple[str, list[dict[str, Any]]]]


@dataclass(frozen=True)
class QAItem:
    question: str
    doc: str
    answer_any: tuple[str, ...] = ()


@dataclass
class ItemResult:
    question: str
    doc: str
    rank: int | None  # 1-based rank of the first hit within k, None when missed
    retrieved: list[str]
    answer: str | None = None
    answer_ok: bool | None = None
    citation_ok: bool | None = None


@dataclass
class EvalReport:
    questions: int
    k: int
    mode: str
    retrieval: dict[str, float]
    generation: dict[str, float] | None
    items: list[ItemResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_qa(path: Path) -> list[QAItem]:
    """Read a question set; a malformed line fails with its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from exc
    items: list[QAItem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            question, doc = data["question"], data["doc"]
            answers = data.get("answer_any", [])
            if not isinstance(question, str) or not isinstance(doc, str) or not question or not doc:
                raise ValueError("question and doc must be non-empty strings")
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise ValueError("answer_any must be a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InvalidRequest(f"{path}:{number}: {reason}") from exc
        items.append(QAItem(question, doc, tuple(answers)))
    if not items:
        raise InvalidRequest(f"{path} holds no questions")
    return items


def is_hit(citation: dict[str, Any], doc: str) -> bool:
    uri = str(citation.get("uri", ""))
    return doc in uri or doc in unquote(uri) or doc in str(citation.get("title", ""))


def first_hit(citations: Sequence[dict[str, Any]], doc: str) -> int | None:
    return next((i for i, c in enumerate(citations, start=1) if is_hit(c, doc)), None)


def answer_contains(answer: str, answer_any: Sequence[str]) -> bool:
    low = answer.casefold()
    return any(a.casefold() in low for a in answer_any)


def evaluate(
    items: Sequence[QAItem], search: SearchFn, k: int, ask: AskFn | None = None, mode: str = "hybrid"
) -> EvalReport:
    started = time.perf_counter()
    results: list[ItemResult] = []
    for item in items:
        citations = search(item.question, k)[:k]
        result = ItemResult(
            item.question,
            item.doc,
            first_hit(citations, item.doc),
            [str(c.get("uri", "")) for c in citations],
        )
        if ask is not None:
            answer, used = ask(item.question)
            result.answer = answer
            result.answer_ok = answer_contains(answer, item.answer_any) if item.answer_any else None
            result.citation_ok = first_hit(used, item.doc) is not None
        results.append(result)
    n = len(results)
    retrieval = {
        "hit@1": _rate(sum(r.rank == 1 for r in results), n),
        "hit@k": _rate(sum(r.rank is not None for r in results), n),
        "mrr": round(sum(1.0 / r.rank for r in results if r.rank) / n, 4),
    }
    generation = None
    if ask is not None:
        judged = [r for r in results if r.answer_ok is not None]
        generation = {
            "answer_contains": _rate(sum(bool(r.answer_ok) for r in judged), len(judged)),
            "citation_correct": _rate(sum(bool(r.citation_ok) for r in results), n),
        }
    return EvalReport(n, k, mode, retrieval, generation, results, round(time.perf_counter() - started, 3))


def _rate(hits: int, total: int) -> float:
    return round(hits / total, 4) if total else 0.0


def summary_text(report: EvalReport) -> str:
    r = report.retrieval
    lines = [
        f"{report.questions} questions, k={report.k}, mode={report.mode}: "
        f"hit@1 {r['hit@1']:.3f}  hit@{report.k} {r['hit@k']:.3f}  MRR {r['mrr']:.3f}"
    ]
    if report.generation:
        g = report.generation
        lines.append(
            f"answers containing an expected string {g['answer_contains']:.3f}, "
            f"citing the right document {g['citation_correct']:.3f}"
        )
    misses = [it for it in report.items if it.rank is None]
    for it in misses:
        lines.append(f"  missed: {it.question}  (expected {it.doc})")
    return "\n".join(lines)
