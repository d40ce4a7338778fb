"""Verification: the chain of one file (the live log, an archive, an export), and of the whole
log: its archives, anchor, head, checkpoints and witnesses, so that nothing cut, rewritten,
forged or deleted goes unnoticed. The result names the first record that does not check out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.audit.events import CHECKPOINT, CUT
from appliance.audit.records import (
    GENESIS,
    Signer,
    canonical,
    read_json,
    read_lines,
    record_hash,
    trailer_hash,
)

if TYPE_CHECKING:
    from appliance.audit.chain import AuditLog


@dataclass
class VerifyResult:
    ok: bool
    records: int
    first_bad: int | None = None  # 1-based line number
    reason: str = ""
    # What a caller chaining several files needs; not part of the report.
    last_seq: int = field(default=0, repr=False)
    head: str = field(default=GENESIS, repr=False)
    hashes: dict[int, str] = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "first_bad_line": self.first_bad,
            "reason": self.reason,
        }


def _bad(records: int, line: int | None, reason: str) -> VerifyResult:
    return VerifyResult(False, records, line, reason)


def verify_file(
    path: Path,
    *,
    require_trailer: bool = False,
    anchor: dict[str, Any] | None = None,
    head: dict[str, Any] | None = None,
    checkpoints: Sequence[dict[str, Any]] = (),
    signer: Signer | None = None,
    signed_from: int | None = None,
) -> VerifyResult:
    """Check the chain of ``path``; with ``anchor``/``head``/``checkpoints`` (the live log) also that
    nothing was cut off; with ``require_trailer`` (an export, an archive) that it ends in a
    matching trailer. With ``signer`` every record from ``signed_from`` on (and from the first
    signed one on) must carry a valid MAC, and so must a trailer."""
    if not path.exists():
        if require_trailer:
            return _bad(0, 1, f"{path} does not exist")
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
        return _bad(0, len(raw_lines) + 1, "export has no trailer: it was cut short or is not an export")
    trailer_line = len(raw_lines) + 1
    if trailer is not None:
        body = trailer.get("export")
        if not isinstance(body, dict) or trailer_hash(body) != trailer.get("hash"):
            return _bad(0, trailer_line, "export trailer does not match its hash")
        if (
            signer is not None
            and "mac" in trailer
            and not signer.check(trailer["mac"], "trailer", trailer["hash"])
        ):
            return _bad(0, trailer_line, "export trailer is not signed by this appliance's key")
        start = body.get("start") or {}
        anchor = {"seq": start.get("seq", 1), "prev": start.get("prev", GENESIS)}
    prev = str(anchor["prev"]) if anchor else GENESIS
    first_seq = int(anchor["seq"]) if anchor else 1
    expected_seq = first_seq
    by_seq: dict[int, str] = {}
    count = 0
    signed = False
    for lineno, raw in enumerate(raw_lines, start=1):
        count = lineno
        bad = _check_line(raw, prev, expected_seq)
        if isinstance(bad, str):
            if lineno == len(raw_lines) and not raw.endswith(b"\n") and trailer is None:
                bad = f"{bad}; the last line is partial (a torn write is cut off when the log is next opened)"
            return _bad(lineno - 1, lineno, bad)
        if signer is not None:
            why = _check_mac(bad, signer, signed or (signed_from is not None and bad["seq"] >= signed_from))
            if why:
                return _bad(lineno - 1, lineno, why)
            signed = signed or "mac" in bad
        if bad.get("action") == CUT:
            reason = (bad.get("data") or {}).get("reason", "")
            return _bad(
                lineno - 1, lineno, f"records were removed before seq {bad['seq']} was written: {reason}"
            )
        prev, expected_seq = bad["hash"], expected_seq + 1
        by_seq[bad["seq"]] = bad["hash"]
    last_seq = expected_seq - 1
    if trailer is not None:
        body = trailer["export"]
        if body.get("records") != count or body.get("last_seq") != (last_seq if count else None):
            return _bad(
                count,
                trailer_line,
                f"export trailer says {body.get('records')} records, the file holds {count}: records were removed",
            )
        if body.get("head") != prev:
            return _bad(count, trailer_line, "export trailer head does not match the last record")
        if signer is not None and signed and "mac" not in trailer:
            return _bad(count, trailer_line, "export trailer is not signed while its records are")
    if head is not None and (head.get("seq") != last_seq or head.get("hash") != prev):
        return _bad(
            count,
            count + 1,
            f"log ends at seq {last_seq} but its head file says seq {head.get('seq')}: the tail was cut or replaced",
        )
    for cp in checkpoints:
        seq = cp.get("seq")
        if not isinstance(seq, int) or seq < first_seq:
            continue  # archived by retention
        if seq > last_seq:
            return _bad(count, count + 1, f"checkpoint record {seq} is missing: the log was truncated")
        if by_seq.get(seq) != cp.get("hash"):
            return _bad(count, seq - first_seq + 1, f"record {seq} differs from its checkpoint")
    return VerifyResult(True, count, last_seq=last_seq, head=prev, hashes=by_seq)


def _check_mac(record: dict[str, Any], signer: Signer, required: bool) -> str:
    if "mac" not in record:
        return f"record {record['seq']} is not signed, but signing began before it" if required else ""
    if not signer.check(record["mac"], "record", record["hash"]):
        return "record is not signed by this appliance's key"
    return ""


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
    if canonical(record) + b"\n" != raw and canonical(record) != raw:
        return "record is not in canonical form"
    if record.get("action") == CHECKPOINT:
        data = record.get("data") or {}
        if data.get("head") != prev or data.get("count") != expected_seq - 1:
            return "checkpoint record does not match the chain"
    return record


# -- the whole log -------------------------------------------------------------------------------


def verify_log(log: AuditLog) -> VerifyResult:
    """The live log, its archives (each an export, chained one to the next and to the anchor),
    the anchor, head and checkpoint files, and every witness that can be read back."""
    signer = log.signer
    witnessed: list[dict[str, Any]] = []
    if log.witnesses is not None:
        witnessed, why = log.witnesses.recorded()
        if why:
            return _bad(0, None, why)
    head = read_json(log.head_path)
    anchor = log.anchor()
    signed_from = _signed_from(signer, head, witnessed)
    if signer is not None:
        why = _check_anchors(signer, head, anchor, signed_from)
        if why:
            return _bad(0, None, why)
    checkpoints = read_lines(log.checkpoints_path)
    if checkpoints is None:
        return _bad(0, None, "checkpoint file is unreadable")
    if signer is not None:
        for cp in checkpoints:
            seq = cp.get("seq")
            required = "mac" in cp or (
                signed_from is not None and isinstance(seq, int) and seq >= signed_from
            )
            if required and not signer.check(cp.get("mac"), "checkpoint", seq, cp.get("hash")):
                return _bad(0, None, f"checkpoint {seq} in checkpoints.jsonl is not signed by this key")
    archived = _verify_archives(log, anchor, signer, signed_from)
    if isinstance(archived, VerifyResult):
        return archived
    if not log.path.exists() and (head or checkpoints or witnessed or anchor):
        last = max((int(e["seq"]) for e in witnessed), default=(head or {}).get("seq"))
        return _bad(0, 1, f"audit log is missing, but records up to seq {last} were written")
    result = verify_file(
        log.path, anchor=anchor, head=head, checkpoints=checkpoints, signer=signer, signed_from=signed_from
    )
    if not result.ok:
        return result
    hashes = {**archived, **result.hashes}
    for entry in witnessed:
        seq = int(entry["seq"])
        if seq > result.last_seq:
            return _bad(
                result.records,
                result.records + 1,
                f"a witness saw record {seq}, the log ends at {result.last_seq}: it was truncated",
            )
        if seq in hashes and hashes[seq] != entry["hash"]:
            line = seq - min(result.hashes) + 1 if seq in result.hashes else None
            return _bad(result.records, line, f"record {seq} differs from what a witness saw")
    return result


def _signed_from(
    signer: Signer | None, head: dict[str, Any] | None, witnessed: list[dict[str, Any]]
) -> int | None:
    """Where signing began: the earliest the witnesses or a head this key signed say."""
    if signer is None:
        return None
    starts = [int(e["seq"]) for e in witnessed if e.get("kind") == "start"]
    if (
        head
        and "signed_from" in head
        and signer.check(head.get("mac"), "head", head.get("seq"), head.get("hash"), head["signed_from"])
    ):
        starts.append(int(head["signed_from"]))
    return min(starts, default=None)


def _check_anchors(
    signer: Signer, head: dict[str, Any] | None, anchor: dict[str, Any] | None, signed_from: int | None
) -> str:
    # Unsigned files are an older log's, accepted only until signing began.
    head_mac = (head or {}).get("mac"), "head", *((head or {}).get(k) for k in ("seq", "hash", "signed_from"))
    if head is not None and ("mac" in head or signed_from is not None) and not signer.check(*head_mac):
        return "head.json is not signed by this appliance's key: it was rewritten"
    anchor_mac = (
        (anchor or {}).get("mac"),
        "anchor",
        *((anchor or {}).get(k) for k in ("seq", "prev", "archive")),
    )
    if anchor is not None and ("mac" in anchor or signed_from is not None) and not signer.check(*anchor_mac):
        return "anchor.json is not signed by this appliance's key: it was forged"
    return ""


def _archive_files(log: AuditLog) -> list[Path]:
    if not log.archive_dir.is_dir():
        return []
    return sorted(log.archive_dir.glob("audit-*.jsonl"))  # names carry zero-padded sequence numbers


def _verify_archives(
    log: AuditLog, anchor: dict[str, Any] | None, signer: Signer | None, signed_from: int | None
) -> dict[int, str] | VerifyResult:
    """Hashes by seq of every archived record, or why the archives do not check out. The first
    archive starts the chain, each next one continues the one before, the anchor the last."""
    files = _archive_files(log)
    hashes: dict[int, str] = {}
    expected = {"seq": 1, "prev": GENESIS}
    for path in files:
        result = verify_file(path, require_trailer=True, signer=signer, signed_from=signed_from)
        if not result.ok:
            return _bad(0, result.first_bad, f"archive {path.name}: {result.reason}")
        start = (json.loads(path.read_bytes().splitlines()[-1])["export"]).get("start") or {}
        if start.get("seq") != expected["seq"] or start.get("prev") != expected["prev"]:
            return _bad(
                0,
                1,
                f"archive {path.name} does not continue the chain at seq {expected['seq']}: an archive is missing",
            )
        hashes.update(result.hashes)
        expected = {"seq": result.last_seq + 1, "prev": result.head}
    if anchor is None:
        if files:
            return _bad(0, 1, "anchor.json is missing, but records were archived")
        return hashes
    if not files:
        return _bad(0, 1, f"archive {anchor.get('archive')} named by anchor.json is missing")
    if (anchor.get("seq"), anchor.get("prev"), anchor.get("archive")) != (
        expected["seq"],
        expected["prev"],
        files[-1].name,
    ):
        return _bad(0, 1, f"anchor.json does not continue archive {files[-1].name}")
    return hashes
