"""Retention: records older than ``audit.retention_days`` move to ``archive/`` as verifiable
exports, the live log is anchored where they end, and a record says that it happened."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from appliance.audit.chain import AuditLog
from appliance.audit.events import AuditEvent
from appliance.audit.records import now as utc_now
from appliance.audit.records import record_time, trailer

log = logging.getLogger(__name__)
# How often a running server applies audit.retention_days (and once when it starts): daily, so
# the archive gets one file per day of records at most.
RETENTION_EVERY_S = 86400.0


def _oldest_before(audit: AuditLog, cutoff: datetime) -> bool:
    try:
        with open(audit.path, "rb") as fh:
            first = fh.readline()
    except FileNotFoundError:
        return False
    return bool(first.strip()) and first.endswith(b"\n") and record_time(first) < cutoff


def rotate(audit: AuditLog, retention_days: int, now: datetime | None = None) -> dict[str, Any]:
    """Move records older than ``retention_days`` to ``archive/`` (as a verifiable export) and
    anchor the live log at the first kept record, then log that this happened."""
    cutoff = (now or utc_now()) - timedelta(days=retention_days)
    if not _oldest_before(audit, cutoff):
        return {"archived": 0}  # without the lock or reading the whole log
    with audit.locked():
        audit.start_holding_lock()  # a torn last line is not archived half
        lines = audit.path.read_bytes().splitlines(keepends=True)
        old = 0
        for raw in lines:
            if record_time(raw) >= cutoff:
                break
            old += 1
        if old == 0:
            return {"archived": 0}
        archived, kept = lines[:old], lines[old:]
        first, last = json.loads(archived[0]), json.loads(archived[-1])
        audit.archive_dir.mkdir(exist_ok=True)
        archive = audit.archive_dir / f"audit-{first['seq']:09d}-{last['seq']:09d}.jsonl"
        body = b"".join(archived).decode("utf-8")
        archive.write_text(body + trailer(body, audit.anchor(), audit.signer), encoding="utf-8")
        tmp = audit.path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(kept))
        audit.write_anchor(last["seq"] + 1, last["hash"], archive.name)
        os.replace(tmp, audit.path)
        audit.witness("retention", last)
        audit.append_holding_lock(AuditEvent.retention(old, last["seq"], archive.name, cutoff.isoformat()))
    return {"archived": old, "archive": str(archive), "through_seq": last["seq"]}


async def keep_retention(
    audit: AuditLog,
    retention_days: int,
    every_s: float = RETENTION_EVERY_S,
    now: Callable[[], datetime] | None = None,
) -> None:
    """Apply retention now and then every ``every_s`` until cancelled: the server's lifespan runs
    this, so a server that runs for months archives as it goes, not only when restarted."""
    while True:
        # Shielded: cancelling (the server stopping) lets a rotation under way finish first.
        round_ = asyncio.ensure_future(
            asyncio.to_thread(rotate, audit, retention_days, now() if now else None)
        )
        try:
            report = await asyncio.shield(round_)
            if report["archived"]:
                log.info("audit retention archived %d records to %s", report["archived"], report["archive"])
        except asyncio.CancelledError:
            await asyncio.wait([round_])
            raise
        except Exception:  # noqa: BLE001 - logged; the next round tries again
            log.exception("audit retention failed; retrying in %.0f s", every_s)
        await asyncio.sleep(every_s)
