"""What every part of the audit log agrees on: the canonical form of a record, its hash, the key
that signs it, and the small JSON files kept beside the log."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 over the record without its ``hash`` and ``mac``: a signature added later (or
    missing on records written before signing began) does not change the chain."""
    body = {k: v for k, v in record.items() if k not in ("hash", "mac")}
    return hashlib.sha256(canonical(body)).hexdigest()


def record_time(raw: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(raw)["ts"])


def now() -> datetime:
    return datetime.now(UTC)


class Signer:
    """HMAC-SHA256 with the appliance's audit key. Whoever lacks the key cannot produce a record,
    head, anchor, checkpoint, witness entry or export trailer that verifies, even after
    recomputing every hash."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the audit HMAC key must be at least 16 bytes")
        self._key = key
        # Names this log in a witness that several appliances share, without revealing the key.
        self.log_id = self.mac("appliance-audit-log")[:16]

    def mac(self, *parts: object) -> str:
        message = "\x1f".join(str(p) for p in parts).encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def check(self, mac: object, *parts: object) -> bool:
        return isinstance(mac, str) and hmac.compare_digest(mac, self.mac(*parts))


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Replace ``path`` atomically: a crash leaves the old or the new content, never half."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def read_lines(path: Path) -> list[dict[str, Any]] | None:
    """JSON objects, one a line; None when a line is unreadable. A missing file has none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        out.append(value)
    return out


def append_line(path: Path, value: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(value, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def trailer(data: str, start: dict[str, Any] | None, signer: Signer | None) -> str:
    """The last line of an export or archive: count, first/last sequence, head hash, where the
    chain starts, its own hash and (signed) its MAC. A cut or edited export no longer matches it."""
    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    body = {
        "records": len(lines),
        "first_seq": lines[0]["seq"] if lines else None,
        "last_seq": lines[-1]["seq"] if lines else None,
        "head": lines[-1]["hash"] if lines else (start or {}).get("prev", GENESIS),
        "start": {"seq": (start or {}).get("seq", 1), "prev": (start or {}).get("prev", GENESIS)},
        "exported_at": now().isoformat(),
    }
    digest = hashlib.sha256(canonical(body)).hexdigest()
    out: dict[str, Any] = {"export": body, "hash": digest}
    if signer is not None:
        out["mac"] = signer.mac("trailer", digest)
    return (canonical(out) + b"\n").decode("utf-8")


def trailer_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(body)).hexdigest()
