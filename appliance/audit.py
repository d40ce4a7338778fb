"""Tamper-evident audit log: typed records in an append-only, hash-chained JSON-lines file.

Each record carries the hash of the one before it and its own hash over its canonical JSON, so
changing, removing or reordering any record breaks the chain at that record. ``verify`` names the
first record that does not check out.

A chain alone cannot tell a log whose tail was cut off from a shorter log, so three anchors sit
beside it under ``audit/``:

- ``head.json``: sequence number and hash of the last record, rewritten on every append;
- ``checkpoints.jsonl``: every ``checkpoint_every`` records a checkpoint record (running hash and
  count) is appended to the chain and also to this file, which only grows;
- ``anchor.json``: after retention moved old records to ``archive/``, the sequence number and
  previous hash the live log now starts from.

Exports end with a trailer (record count, first/last sequence, head hash, its own hash), so a cut
export fails ``verify --file`` too. Without a secret nothing stops someone who can rewrite every
file from recomputing all hashes; ship exports or checkpoints to a SIEM / WORM store for that.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from appliance.domain import Principal, ScoredChunk

log = logging.getLogger(__name__)
# How often a running server applies audit.retention_days (and once when it starts): daily, so
# the archive gets one file per day of records at most.
RETENTION_EVERY_S = 86400.0

GENESIS = "0" * 64
CHECKPOINT = "audit.checkpoint"
RETENTION = "audit.retention"


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


UsageSink = Callable[[Principal, dict[str, int]], None]


class AuditLog:
    def __init__(
        self,
        path: Path,
        checkpoint_every: int = 100,
        record_queries: bool = True,
        usage_sink: UsageSink | None = None,
    ) -> None:
        self.path = path
        self.checkpoint_every = checkpoint_every
        # Questions and searches are logged only when enabled; admin actions and auth failures always.
        self.record_queries = record_queries
        self.usage_sink = usage_sink

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def head_path(self) -> Path:
        return self.dir / "head.json"

    @property
    def checkpoints_path(self) -> Path:
        return self.dir / "checkpoints.jsonl"

    @property
    def anchor_path(self) -> Path:
        return self.dir / "anchor.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # One lock file for append and rotation: rotation replaces the log file itself.
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, event: AuditEvent) -> dict[str, Any]:
        with self._locked(), open(self.path, "a+b") as fh:
            prev, seq = _tail(fh)
            if seq == 0:
                prev, seq = self._anchor_start()
            record = self._write(fh, prev, seq, event)
            if self.checkpoint_every and record["seq"] % self.checkpoint_every == 0:
                head = record["hash"]
                cp = self._write(
                    fh,
                    head,
                    record["seq"],
                    AuditEvent("system", CHECKPOINT, "audit", {"count": record["seq"], "head": head}),
                )
                with open(self.checkpoints_path, "a", encoding="utf-8") as cpf:
                    cpf.write(json.dumps({"seq": cp["seq"], "hash": cp["hash"], "ts": cp["ts"]}) + "\n")
                    cpf.flush()
                    os.fsync(cpf.fileno())
                self._write_head(cp)
            else:
                self._write_head(record)
        return record

    def _write(self, fh: Any, prev: str, seq: int, event: AuditEvent) -> dict[str, Any]:
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
        return record

    def _write_head(self, record: dict[str, Any]) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seq": record["seq"], "hash": record["hash"]}))
        os.replace(tmp, self.head_path)

    def _anchor_start(self) -> tuple[str, int]:
        anchor = _read_json(self.anchor_path)
        if anchor:
            return str(anchor["prev"]), int(anchor["seq"]) - 1
        return GENESIS, 0

    def verify(self, path: Path | None = None) -> VerifyResult:
        """The live log with its anchors, or (``path``) an exported file, which must end in its trailer."""
        if path is not None:
            return verify_file(path, require_trailer=True)
        checkpoints = []
        if self.checkpoints_path.exists():
            for line in self.checkpoints_path.read_text(encoding="utf-8").splitlines():
                try:
                    checkpoints.append(json.loads(line))
                except ValueError:
                    return VerifyResult(False, 0, None, "checkpoint file is unreadable")
        return verify_file(
            self.path,
            anchor=_read_json(self.anchor_path),
            head=_read_json(self.head_path),
            checkpoints=checkpoints,
        )

    def export(self, out: Path | None = None) -> str:
        """The live log plus a trailer that pins its length and head (JSON lines)."""
        with self._locked():
            data = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        text = data + _trailer(data, _read_json(self.anchor_path))
        if out is not None:
            out.write_text(text, encoding="utf-8")
        return text

    def _oldest_before(self, cutoff: datetime) -> bool:
        try:
            with open(self.path, "rb") as fh:
                first = fh.readline()
        except FileNotFoundError:
            return False
        return bool(first.strip()) and _record_time(first) < cutoff

    def rotate(self, retention_days: int, now: datetime | None = None) -> dict[str, Any]:
        """Move records older than ``retention_days`` to ``archive/`` (as a verifiable export) and
        anchor the live log at the first kept record, then log that this happened."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        if not self._oldest_before(cutoff):
            return {"archived": 0}  # without the lock or reading the whole log
        with self._locked():
            if not self.path.exists():
                return {"archived": 0}
            lines = self.path.read_bytes().splitlines(keepends=True)
            old = 0
            for raw in lines:
                if _record_time(raw) >= cutoff:
                    break
                old += 1
            if old == 0:
                return {"archived": 0}
            archived, kept = lines[:old], lines[old:]
            first, last = json.loads(archived[0]), json.loads(archived[-1])
            archive_dir = self.dir / "archive"
            archive_dir.mkdir(exist_ok=True)
            archive = archive_dir / f"audit-{first['seq']:09d}-{last['seq']:09d}.jsonl"
            body = b"".join(archived).decode("utf-8")
            archive.write_text(body + _trailer(body, _read_json(self.anchor_path)), encoding="utf-8")
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(b"".join(kept))
            anchor = {"seq": last["seq"] + 1, "prev": last["hash"], "archive": archive.name}
            anchor_tmp = self.anchor_path.with_suffix(".tmp")
            anchor_tmp.write_text(json.dumps(anchor))
            os.replace(anchor_tmp, self.anchor_path)
            os.replace(tmp, self.path)
            with open(self.path, "a+b") as fh:
                prev, seq = _tail(fh)
                if seq == 0:
                    prev, seq = last["hash"], last["seq"]
                event = AuditEvent(
                    "system",
                    RETENTION,
                    "audit",
                    {
                        "archived": old,
                        "through_seq": last["seq"],
                        "archive": archive.name,
                        "cutoff": cutoff.isoformat(),
                    },
                )
                self._write_head(self._write(fh, prev, seq, event))
        return {"archived": old, "archive": str(archive), "through_seq": last["seq"]}


def _record_time(raw: bytes) -> datetime:
    return datetime.fromisoformat(json.loads(raw)["ts"])


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
            asyncio.to_thread(audit.rotate, retention_days, now() if now else None)
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


def audit_admin(container: Any, actor: Principal | str, action: str, target: str, **data: Any) -> None:
    """Record an administrative action (users, keys, groups, sources, documents, settings)."""
    name = actor.name if isinstance(actor, Principal) else actor
    container.audit.append(AuditEvent(name, action, target, data))


def audit_query(
    audit: AuditLog | None,
    *,
    action: str,
    principal: Principal,
    collection: str,
    question: str,
    hits: Sequence[ScoredChunk],
    status: str,
    latency_ms: float | None,
    model: str | None = None,
    answer: str | None = None,
    usage: dict[str, int] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Record one chat, ask or search (what was asked, which chunks at which document versions
    came back, under which access filter) and meter its tokens. Called by the RAG pipeline and
    the search route."""
    if audit is None:
        return
    from appliance.security.acl import filter_hash

    usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}
    if audit.usage_sink is not None:
        audit.usage_sink(principal, usage)
    if not audit.record_queries:
        return
    data: dict[str, Any] = {
        "question": question,
        "chunk_ids": [h.chunk.id for h in hits],
        "document_versions": sorted({f"{h.chunk.document_id}@{h.chunk.version}" for h in hits}),
        "filter_sha256": filter_hash(principal, collection),
        "status": status,
        "latency_ms": latency_ms,
    }
    if principal.key_id is not None:
        data["key_id"] = principal.key_id
    if answer is not None:
        data["model"] = model
        data["answer_sha256"] = hashlib.sha256(answer.encode("utf-8")).hexdigest()
        data["usage"] = usage
    data.update(extra or {})
    audit.append(AuditEvent(principal.name, action, collection, data))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _trailer(data: str, anchor: dict[str, Any] | None) -> str:
    lines = [json.loads(line) for line in data.splitlines() if line.strip()]
    body = {
        "records": len(lines),
        "first_seq": lines[0]["seq"] if lines else None,
        "last_seq": lines[-1]["seq"] if lines else None,
        "head": lines[-1]["hash"] if lines else (anchor or {}).get("prev", GENESIS),
        "start": {"seq": (anchor or {}).get("seq", 1), "prev": (anchor or {}).get("prev", GENESIS)},
        "exported_at": datetime.now(UTC).isoformat(),
    }
    trailer = {"export": body, "hash": hashlib.sha256(_canonical(body)).hexdigest()}
    return (_canonical(trailer) + b"\n").decode("utf-8")


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


def verify_file(
    path: Path,
    *,
    require_trailer: bool = False,
    anchor: dict[str, Any] | None = None,
    head: dict[str, Any] | None = None,
    checkpoints: Sequence[dict[str, Any]] = (),
) -> VerifyResult:
    """Check the chain of ``path``; with ``anchor``/``head``/``checkpoints`` (the live log) also that
    nothing was cut off; with ``require_trailer`` (an export) that it ends in a matching trailer."""
    if not path.exists():
        if require_trailer:
            return VerifyResult(False, 0, 1, f"{path} does not exist")
        ok = not head and not checkpoints
        return VerifyResult(ok, 0, None if ok else 1, "" if ok else "audit log is missing")
    raw_lines = path.read_bytes().splitlines(keepends=True)
    trailer: dict[str, Any] | None = None
    if raw_lines:
        try:
            last = json.loads(raw_lines[-1])
        except ValueError:
            last = None
        if isinstance(last, dict) and "export" in last:
            trailer = last
            raw_lines = raw_lines[:-1]
    if require_trailer and trailer is None:
        return VerifyResult(
            False, 0, len(raw_lines) + 1, "export has no trailer: it was cut short or is not an export"
        )
    trailer_line = len(raw_lines) + 1
    if trailer is not None:
        body = trailer.get("export")
        if not isinstance(body, dict) or hashlib.sha256(_canonical(body)).hexdigest() != trailer.get("hash"):
            return VerifyResult(False, 0, trailer_line, "export trailer does not match its hash")
        start = body.get("start") or {}
        anchor = {"seq": start.get("seq", 1), "prev": start.get("prev", GENESIS)}
    prev = str(anchor["prev"]) if anchor else GENESIS
    expected_seq = int(anchor["seq"]) if anchor else 1
    by_seq: dict[int, str] = {}
    count = 0
    for lineno, raw in enumerate(raw_lines, start=1):
        count = lineno
        bad = _check_line(raw, prev, expected_seq)
        if isinstance(bad, str):
            return VerifyResult(False, lineno - 1, lineno, bad)
        prev, expected_seq = bad["hash"], expected_seq + 1
        by_seq[bad["seq"]] = bad["hash"]
    last_seq = expected_seq - 1
    if trailer is not None:
        body = trailer["export"]
        if body.get("records") != count or body.get("last_seq") != (last_seq if count else None):
            return VerifyResult(
                False,
                count,
                trailer_line,
                f"export trailer says {body.get('records')} records, the file holds {count}: records were removed",
            )
        if body.get("head") != prev:
            return VerifyResult(
                False, count, trailer_line, "export trailer head does not match the last record"
            )
    if head is not None and (head.get("seq") != last_seq or head.get("hash") != prev):
        return VerifyResult(
            False,
            count,
            count + 1,
            f"log ends at seq {last_seq} but its head file says seq {head.get('seq')}: the tail was cut or replaced",
        )
    first_seq = int(anchor["seq"]) if anchor else 1
    for cp in checkpoints:
        seq = cp.get("seq")
        if not isinstance(seq, int) or seq < first_seq:
            continue  # archived by retention
        if seq > last_seq:
            return VerifyResult(
                False, count, count + 1, f"checkpoint record {seq} is missing: the log was truncated"
            )
        if by_seq.get(seq) != cp.get("hash"):
            return VerifyResult(
                False, count, seq - first_seq + 1, f"record {seq} differs from its checkpoint"
            )
    return VerifyResult(True, count)


def _check_line(raw: bytes, prev: str, expected_seq: int) -> dict[str, Any] | str:
    """The record, or why it is bad."""
    try:
        record = json.loads(raw.decode("utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, ValueError) as exc:
        return f"unreadable record: {exc}"
    if record.get("prev") != prev:
        return "chain broken: prev does not match the record before"
    if record.get("seq") != expected_seq:
        return f"sequence {record.get('seq')} where {expected_seq} was due"
    if record_hash(record) != record.get("hash"):
        return "record hash does not match its content"
    if _canonical(record) + b"\n" != raw and _canonical(record) != raw:
        return "record is not in canonical form"
    if record.get("action") == CHECKPOINT:
        data = record.get("data") or {}
        if data.get("head") != prev or data.get("count") != expected_seq - 1:
            return "checkpoint record does not match the chain"
    return record
