"""Retrieval and answer evaluation over a labelled question set.

A set is JSON lines ``{"question", "doc", "answer_any": [...]}``. Retrieval is judged by document:
a result is a hit when its uri or title contains ``doc``. Generation, when run, is judged by whether
the answer contains any of ``answer_any`` (case-insensitive) and whether a citation is a hit.

As a gate: a run's report is written to ``<dir>/<date>-<set>.json`` and compared with a baseline
report of the same set, k and mode; a metric more than ``max_drop`` below the baseline's fails it.
"""

from __future__ import annotations

import datetime as dt
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
    set: str = ""  # the question set's name, as in the result file's name
    date: str = ""  # UTC day of the run, YYYY-MM-DD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_qa(path: Path) -> list[QAItem]:
    """Read a question set; a malformed line fails with its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}") from exc
    records: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise InvalidRequest(f"{path}:{number}: {exc}") from exc
    return parse_qa(records, str(path))


def parse_qa(records: Sequence[Any], where: str = "items") -> list[QAItem]:
    """Question items from decoded records (a file's lines, or a request's inline set); a bad
    record fails with its 1-based position."""
    items: list[QAItem] = []
    for number, data in enumerate(records, start=1):
        try:
            if not isinstance(data, dict):
                raise ValueError("each item must be an object")
            question, doc = data["question"], data["doc"]
            answers = data.get("answer_any", [])
            if not isinstance(question, str) or not isinstance(doc, str) or not question or not doc:
                raise ValueError("question and doc must be non-empty strings")
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                raise ValueError("answer_any must be a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise InvalidRequest(f"{where}:{number}: {reason}") from exc
        items.append(QAItem(question, doc, tuple(answers)))
    if not items:
        raise InvalidRequest(f"{where} holds no questions")
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
    items: Sequence[QAItem],
    search: SearchFn,
    k: int,
    ask: AskFn | None = None,
    mode: str = "hybrid",
    name: str = "",
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
    elapsed = round(time.perf_counter() - started, 3)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    return EvalReport(n, k, mode, retrieval, generation, results, elapsed, name, today)


def _rate(hits: int, total: int) -> float:
    return round(hits / total, 4) if total else 0.0


# -- the gate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drop:
    metric: str  # "retrieval.mrr", "generation.answer_contains", ...
    baseline: float
    current: float

    @property
    def by(self) -> float:
        return round(self.baseline - self.current, 4)


@dataclass
class GateResult:
    baseline: str  # where the baseline came from (a path, or "inline")
    max_drop: float
    drops: list[Drop]
    newly_missed: list[str]  # questions the baseline found within k and this run did not

    @property
    def passed(self) -> bool:
        return not self.drops

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "max_drop": self.max_drop,
            "passed": self.passed,
            "drops": [{**asdict(d), "by": d.by} for d in self.drops],
            "newly_missed": self.newly_missed,
        }


def set_name(path: Path) -> str:
    """A question set's name: the file's stem, or its folder's name for a ``qa.jsonl`` that labels
    a corpus folder (tests/fixtures/kb/qa.jsonl is ``kb``)."""
    return path.parent.name if path.stem == "qa" and path.parent.name else path.stem


def result_path(out_dir: Path, report: EvalReport) -> Path:
    return out_dir / f"{report.date}-{report.set or 'eval'}.json"


def write_report(out_dir: Path, report: EvalReport, gate: GateResult | None = None) -> Path:
    """``<out_dir>/<date>-<set>.json``: the report (and its gate verdict); a later run of the same
    set on the same day replaces it. The file is a valid baseline for later runs."""
    path = result_path(out_dir, report)
    data = report.as_dict()
    if gate is not None:
        data["gate"] = gate.as_dict()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path


def load_baseline(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidRequest(f"cannot read baseline {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InvalidRequest(f"baseline {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest(f"baseline {path} is not an eval report")
    return data


def compare(report: EvalReport, baseline: dict[str, Any], max_drop: float, source: str) -> GateResult:
    """Every metric of ``report`` more than ``max_drop`` below the baseline's. Generation metrics
    count when both runs have them. A baseline of another k, mode or number of questions measures
    something else, so it is refused rather than compared."""
    if not isinstance(baseline.get("retrieval"), dict):
        raise InvalidRequest(f"baseline {source} has no retrieval metrics")
    for key, ours in (("k", report.k), ("mode", report.mode), ("questions", report.questions)):
        if baseline.get(key, ours) != ours:
            raise InvalidRequest(
                f"baseline {source} was measured with {key}={baseline.get(key)}, this run has "
                f"{key}={ours}: measure a new baseline (--out) and commit it"
            )
    drops: list[Drop] = []
    sections = [("retrieval", report.retrieval, baseline["retrieval"])]
    if report.generation and isinstance(baseline.get("generation"), dict):
        sections.append(("generation", report.generation, baseline["generation"]))
    for section, current, before in sections:
        for metric, value in current.items():
            old = before.get(metric)
            # A tiny epsilon: metrics are rounded to 4 places, a drop of exactly max_drop passes.
            if isinstance(old, int | float) and old - value > max_drop + 1e-9:
                drops.append(Drop(f"{section}.{metric}", float(old), value))
    found_before = {
        it.get("question")
        for it in baseline.get("items") or []
        if isinstance(it, dict) and it.get("rank") is not None
    }
    missed = [it.question for it in report.items if it.rank is None and it.question in found_before]
    return GateResult(source, max_drop, drops, missed)


def run(
    items: Sequence[QAItem],
    search: SearchFn,
    k: int,
    ask: AskFn | None,
    mode: str,
    name: str,
    out_dir: Path,
    baseline: dict[str, Any] | None = None,
    baseline_source: str = "inline",
    max_drop: float = 0.02,
) -> dict[str, Any]:
    """One evaluation as ``appliance eval`` and ``POST /api/v1/eval`` run it: the report, written to
    ``<out_dir>/<date>-<name>.json`` (``result_file``), with the ``gate`` verdict when a baseline
    is given."""
    report = evaluate(items, search, k, ask, mode, name)
    gate = None if baseline is None else compare(report, baseline, max_drop, baseline_source)
    path = write_report(out_dir, report, gate)
    data = {**report.as_dict(), "result_file": str(path)}
    if gate is not None:
        data["gate"] = gate.as_dict()
    return data


# BM25 weights tried by ``appliance eval --tune`` (the dense side keeps weight 1; 0 is dense alone).
TUNE_WEIGHTS = (0.0, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)


def tune(
    items: Sequence[QAItem],
    search_at: Callable[[float], SearchFn],
    k: int,
    current: float,
    weights: Sequence[float] = TUNE_WEIGHTS,
) -> dict[str, Any]:
    """Hybrid retrieval's metrics at each BM25 weight (``search_at(weight)`` searches with it), and
    the best by MRR, then hit@1, then nearness to the ``current`` weight (no change for nothing)."""
    grid = [{"bm25_weight": w, **evaluate(items, search_at(w), k).retrieval} for w in weights]
    best = max(grid, key=lambda r: (r["mrr"], r["hit@1"], -abs(r["bm25_weight"] - current)))
    return {"questions": len(items), "k": k, "current_bm25_weight": current, "grid": grid, "best": best}


def tune_text(data: dict[str, Any]) -> str:
    lines = [f"{data['questions']} questions, k={data['k']}, hybrid at each BM25 weight (dense 1.0):"]
    for row in data["grid"]:
        mark = "  <- best" if row is data["best"] else ""
        lines.append(
            f"  bm25_weight {row['bm25_weight']:<5}  hit@1 {row['hit@1']:.3f}  hit@{data['k']} "
            f"{row['hit@k']:.3f}  MRR {row['mrr']:.3f}{mark}"
        )
    best, current, name = data["best"]["bm25_weight"], data["current_bm25_weight"], data.get("collection")
    if data.get("applied"):
        lines.append(f"stored: collection {name!r} now searches with bm25_weight {best} (was {current})")
    else:
        lines.append(
            f"best bm25_weight {best} (now {current}); `--tune --apply` stores it for collection "
            f"{name!r}, retrieval.bm25_weight sets it for every collection without one"
        )
    return "\n".join(lines)


def report_text(data: dict[str, Any]) -> str:
    """The human summary of :func:`run`'s result: metrics, misses, the file, the gate's verdict."""
    r, k = data["retrieval"], data["k"]
    lines = [
        f"{data['questions']} questions, k={k}, mode={data['mode']}: "
        f"hit@1 {r['hit@1']:.3f}  hit@{k} {r['hit@k']:.3f}  MRR {r['mrr']:.3f}"
    ]
    if g := data.get("generation"):
        lines.append(
            f"answers containing an expected string {g['answer_contains']:.3f}, "
            f"citing the right document {g['citation_correct']:.3f}"
        )
    lines += [
        f"  missed: {it['question']}  (expected {it['doc']})" for it in data["items"] if it["rank"] is None
    ]
    if "result_file" in data:
        lines.append(f"written to {data['result_file']}")
    if gate := data.get("gate"):
        source, margin = gate["baseline"], gate["max_drop"]
        if gate["passed"]:
            lines.append(f"gate passed: no metric more than {margin} below {source}")
        else:
            lines.append(f"gate FAILED against {source} (max drop {margin}):")
            lines += [
                f"  {d['metric']} {d['current']:.4f} < {d['baseline']:.4f} (-{d['by']:.4f})"
                for d in gate["drops"]
            ]
        lines += [f"  newly missed: {q}" for q in gate["newly_missed"]]
    return "\n".join(lines)
