"""Ledger vs vector store: the check behind crash safety.

Converged means, per collection: every chunk id the ledger commits to is in the shard
(``missing`` = 0), every point in the shard belongs to a committed ledger entry (``orphan`` = 0),
and no chunk id or (document, position) appears twice (``duplicate`` = 0). Ids a crashed run had
announced (``pending``) are counted apart: the next sync of that document cleans them up.
``repair`` deletes orphan points and marks documents with missing chunks for re-indexing.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from appliance.ingestion.state import Ledger


def verify(ledger: Ledger, store: Any, collection: str | None = None, repair: bool = False) -> dict[str, Any]:
    names = [collection] if collection else sorted(set(ledger.collections()) | set(store.collections()))
    report: dict[str, Any] = {"ok": True, "collections": {}}
    for name in names:
        records = ledger.list(name)
        committed = Counter(cid for rec in records for cid in rec.chunk_ids)
        pending = {cid for rec in records for cid in rec.pending_chunk_ids or ()} - set(committed)
        points = store.point_index(name)
        in_shard = Counter(pid for pid, _, _ in points)
        positions = Counter((doc, index) for _, doc, index in points)
        missing = sorted(set(committed) - set(in_shard))
        orphans = sorted(set(in_shard) - set(committed))
        duplicates = sum(n - 1 for n in committed.values() if n > 1)
        duplicates += sum(n - 1 for n in in_shard.values() if n > 1)
        duplicates += sum(n - 1 for n in positions.values() if n > 1)
        stats: dict[str, Any] = {
            "documents": len(records),
            "ledger_chunks": sum(committed.values()),
            "shard_points": len(points),
            "missing": len(missing),
            "orphan": len(orphans),
            "duplicate": duplicates,
            "pending": len(pending & set(in_shard)),
        }
        if repair and (orphans or missing):
            if orphans:
                store.delete_chunks(name, orphans)
                store.flush(name)
            gone = set(missing)
            for rec in records:
                if gone & set(rec.chunk_ids):
                    ledger.invalidate(rec.id)
            stats["repaired"] = {
                "deleted_orphans": len(orphans),
                "documents_to_reindex": len([r for r in records if gone & set(r.chunk_ids)]),
            }
        ok = stats["missing"] == 0 and stats["orphan"] == 0 and stats["duplicate"] == 0
        stats["ok"] = ok
        report["ok"] = report["ok"] and ok
        report["collections"][name] = stats
    return report
