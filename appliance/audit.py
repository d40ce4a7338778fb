"""Tamper-evident audit log: typed records in an append-only, hash-chained JSON-lines file.

Each record carries the hash of the one before it and its own hash over its canonical JSON, so
changing, removing or reordering any record breaks the chain at that record. ``verify`` names the
first record that does not check out.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass
class AuditEvent:
    """Who did what to what. ``data`` holds the action-specific fields."""

    actor: str
    action: str
    target: str
    data: dict[str, Any]


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_bad: int | None = None  # 1-based line number
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_bad_line": self.first_bad,
            "reason": self.reason,
        }


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, event: AuditEvent) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock makes read-last-hash + append atomic across threads and processes.
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                prev, seq = _tail(fh)
                record = {
                    "seq": seq + 1,
                    "ts": datetime.now(UTC).isoformat(),
                    "actor": event.actor,
                    "action": event.action,
                    "target": event.target,
                    "data": event.data,
                    "prev": prev,
                }
                record["hash"] = record_hash(record)
                fh.seek(0, os.SEEK_END)
                fh.write(_canonical(record) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return record

    def verify(self, path: Path | None = None) -> VerifyResult:
        return verify_file(path or self.path)

    def export(self, out: Path | None = None) -> str:
        data = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        if out is not None:
            out.write_text(data, encoding="utf-8")
        return data


def _tail(fh: Any) -> tuple[str, int]:
    """Hash and sequence number of the last record (reads backwards, not the whole file)."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    if size == 0:
        return GENESIS, 0
    block = min(size, 65536)
    while True:
        fh.seek(size - block)
        lines = fh.read(block).rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or block == size:
            last = json.loads(lines[-1])
            return str(last["hash"]), int(last["seq"])
        block = min(size, block * 2)


def verify_file(path: Path) -> VerifyResult:
    if not path.exists():
        return VerifyResult(True, 0)
    prev, expected_seq = GENESIS, 1
    count = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            count = lineno
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except (UnicodeDecodeError, ValueError) as exc:
                return VerifyResult(False, lineno - 1, lineno, f"unreadable record: {exc}")
            if record.get("prev") != prev:
                return VerifyResult(
                    False, lineno - 1, lineno, "chain broken: prev does not match the record before"
                )
            if record.get("seq") != expected_seq:
                return VerifyResult(
                    False, lineno - 1, lineno, f"sequence {record.get('seq')} where {expected_seq} was due"
                )
            if record_hash(record) != record.get("hash"):
                return VerifyResult(False, lineno - 1, lineno, "record hash does not match its content")
            if _canonical(record) + b"\n" != raw and _canonical(record) != raw:
                return VerifyResult(False, lineno - 1, lineno, "record is not in canonical form")
            prev, expected_seq = record["hash"], expected_seq + 1
    return VerifyResult(True, count)
