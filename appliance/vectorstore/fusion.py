"""Fusion and diversity over candidate lists, the same code for every store adapter.

Qdrant Edge 0.9's ``Fusion.Rrf`` takes no per-source weights, so the adapters fetch the dense and
the BM25 candidates separately (each filtered inside the store) and fuse them here. Doing it in one
place is also what makes the adapters congruent: same candidates in, same ranking out.

Three methods, all weighted per leg:
- ``minmax`` (the default): each list's scores scaled to 0..1 between its lowest and highest
  candidate, then added (a convex combination of normalised scores). Scores keep their gaps, so a
  leg that is sure of its first hit (a BM25 score far above the rest) outweighs one whose top
  scores are all alike.
- ``dbsf``: distribution-based score fusion as Qdrant defines it: scaled between the mean minus
  and plus three standard deviations instead.
- ``rrf``: reciprocal-rank fusion, which looks only at ranks and so cannot tell a sure first hit
  from a lucky one.
docs/retrieval.md has the measurements that chose the default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Candidate:
    id: str
    score: float
    payload: dict[str, Any]


def weighted_rrf(
    ranked_lists: Sequence[Sequence[Candidate]], weights: Sequence[float], rrf_k: int
) -> list[Candidate]:
    """Reciprocal-rank fusion: ``score(d) = sum_i w_i / (rrf_k + rank_i(d))``, ranks from 1.

    Ties break by the id so that every adapter returns the same order for the same inputs.
    """
    scores: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for ranked, weight in zip(ranked_lists, weights, strict=True):
        if weight <= 0:
            continue
        for rank, cand in enumerate(ranked, start=1):
            scores[cand.id] = scores.get(cand.id, 0.0) + weight / (rrf_k + rank)
            payloads.setdefault(cand.id, cand.payload)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [Candidate(i, scores[i], payloads[i]) for i in order]


def minmax(ranked_lists: Sequence[Sequence[Candidate]], weights: Sequence[float]) -> list[Candidate]:
    """Min-max score fusion: each list's scores mapped to 0..1 between its lowest and highest
    candidate, then summed with the weights; a candidate missing from a list gets 0 from it (the
    list's lowest). A list whose scores are all equal counts 1.0 each.

    Ties break by the id, as in :func:`weighted_rrf`.
    """

    def scale(values: list[float]) -> Callable[[float], float]:
        low, span = min(values), max(values) - min(values)
        return (lambda v: (v - low) / span) if span > 0 else (lambda v: 1.0)

    return _score_fusion(ranked_lists, weights, scale)


def dbsf(ranked_lists: Sequence[Sequence[Candidate]], weights: Sequence[float]) -> list[Candidate]:
    """Distribution-based score fusion: each list's scores are mapped to 0..1 between its mean
    minus and plus three standard deviations (clipped), then summed with the weights; a candidate
    missing from a list gets 0 from it. A list of one score, or of equal scores, counts 0.5 each.

    Ties break by the id, as in :func:`weighted_rrf`.
    """

    def scale(values: list[float]) -> Callable[[float], float]:
        mean = sum(values) / len(values)
        std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
        low, span = mean - 3 * std, 6 * std
        return (lambda v: min(1.0, max(0.0, (v - low) / span))) if span > 0 else (lambda v: 0.5)

    return _score_fusion(ranked_lists, weights, scale)


def _score_fusion(
    ranked_lists: Sequence[Sequence[Candidate]],
    weights: Sequence[float],
    scale: Callable[[list[float]], Callable[[float], float]],
) -> list[Candidate]:
    """Each list's scores normalised by ``scale`` (built from that list's scores), weighted and
    summed per candidate; best first, ties by id."""
    scores: dict[str, float] = {}
    payloads: dict[str, dict[str, Any]] = {}
    for ranked, weight in zip(ranked_lists, weights, strict=True):
        if weight <= 0 or not ranked:
            continue
        norm = scale([c.score for c in ranked])
        for cand in ranked:
            scores[cand.id] = scores.get(cand.id, 0.0) + weight * norm(cand.score)
            payloads.setdefault(cand.id, cand.payload)
    order = sorted(scores, key=lambda i: (-scores[i], i))
    return [Candidate(i, scores[i], payloads[i]) for i in order]


def cap_per_document(candidates: Sequence[Candidate], k: int, max_per_document: int) -> list[Candidate]:
    """The best ``k`` candidates with at most ``max_per_document`` from one document (0: no cap).

    When the cap leaves fewer than ``k``, the skipped candidates fill up the rest in rank order:
    a short list is worse than a repetitive one.
    """
    if max_per_document <= 0:
        return list(candidates[:k])
    kept: list[Candidate] = []
    skipped: list[Candidate] = []
    per_doc: dict[str, int] = {}
    for cand in candidates:
        doc = str(cand.payload.get("document_id", cand.id))
        if per_doc.get(doc, 0) < max_per_document:
            per_doc[doc] = per_doc.get(doc, 0) + 1
            kept.append(cand)
            if len(kept) == k:
                return kept
        else:
            skipped.append(cand)
    if len(kept) < k:
        extra = skipped[: k - len(kept)]
        rank = {c.id: n for n, c in enumerate(candidates)}
        kept = sorted([*kept, *extra], key=lambda c: rank[c.id])
    return kept
