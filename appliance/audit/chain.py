"""The append-only, hash-chained, signed audit log (JSON lines) and the anchors kept beside it.

Each record carries the hash of the one before it and its own hash over its canonical JSON, so
changing, removing or reordering any record breaks the chain there; with a key each record also
carries ``mac``, an HMAC of its hash, so nobody without the key can write a chain that verifies.

Beside the log, under ``audit/``:
- ``head.json``: seq and hash of the last record and where signing began, signed, rewritten on
  every append (a cut tail no longer matches it, and a rewritten one is not signed);
- ``checkpoints.jsonl``: every ``checkpoint_every`` records a checkpoint record (running hash and
  count) is appended to the chain and to this file, which only grows;
- ``anchor.json``: after retention moved old records to ``archive/``, the seq and previous hash the
  live log now starts from, signed;
- ``torn/``: the bytes of a partial last line cut off at recovery.
The same checkpoints (and where signing began, and each retention) also go to the witnesses
(``witness.py``): outside this directory, they reveal a log that was cut, rewritten or deleted.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from appliance.audit.events import AuditEvent
from appliance.audit.records import (
    GENESIS,
    Signer,
    append_line,
    canonical,
    now,
    read_json,
    record_hash,
    trailer,
    write_json,
)
from appliance.audit.witness import Witnesses

if TYPE_CHECKING:
    from appliance.audit.verify import VerifyResult

log = logging.getLogger(__name__)


class AuditLog:
    """``signer``: the key's HMAC (None: hashes only, as in exports checked elsewhere).
    ``witnesses``: where checkpoints also go; they need the signer."""

    def __init__(
        self,
        path: Path,
        checkpoint_every: int = 100,
        signer: Signer | None = None,
        witnesses: Witnesses | None = None,
    ) -> None:
        self.path = path
        self.checkpoint_every = checkpoint_every
        self.signer = signer
        self.witnesses = witnesses

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

    @property
    def archive_dir(self) -> Path:
        return self.dir / "archive"

    @contextmanager
    def locked(self) -> Iterator[None]:
        # One lock file for append and rotation: rotation replaces the log file itself.
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -- appending ------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover a torn last line now rather than at the first append (a process opening the
        log to write calls this once)."""
        with self.locked():
            self.start_holding_lock()

    def start_holding_lock(self) -> None:
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "a+b") as fh:
                self._tail(fh)

    def append(self, event: AuditEvent) -> dict[str, Any]:
        with self.locked():
            return self.append_holding_lock(event)

    def append_holding_lock(self, event: AuditEvent) -> dict[str, Any]:
        """``append`` for a caller already inside ``locked()`` (retention)."""
        with open(self.path, "a+b") as fh:
            prev, seq = self._tail(fh)
            return self._append(fh, prev, seq, event)

    def _append(self, fh: IO[bytes], prev: str, seq: int, event: AuditEvent) -> dict[str, Any]:
        """Write ``event`` after (prev, seq), then its checkpoint when one is due, then the head."""
        head = read_json(self.head_path)
        signed_from = self._signed_from(head)
        cut = self._head_disagrees(head, signed_from, prev, seq)
        if cut is not None:
            # The evidence goes into the chain itself: once the head is rewritten below, nothing
            # else would remember that records were missing when this process found the log.
            log.error("audit log %s: %s", self.path, cut.data["reason"])
            prev, seq = _chain_end(self._write(fh, prev, seq, cut))
        record = self._write(fh, prev, seq, event)
        if self.signer is not None and signed_from is None:
            # Signing begins here (a new log, or one written before there was a key): the
            # witnesses learn it, so unsigned records after this point are caught.
            signed_from = record["seq"]
            self._sign_anchor()
            self.witness("start", record)
        last = record
        if self.checkpoint_every and record["seq"] % self.checkpoint_every == 0:
            last = self._write(
                fh, record["hash"], record["seq"], AuditEvent.checkpoint(record["seq"], record["hash"])
            )
            line: dict[str, Any] = {"seq": last["seq"], "hash": last["hash"], "ts": last["ts"]}
            if self.signer is not None:
                line["mac"] = self.signer.mac("checkpoint", last["seq"], last["hash"])
            append_line(self.checkpoints_path, line)
            self.witness("checkpoint", last)
        self.write_head(last, signed_from)
        return record

    def _head_disagrees(
        self, head: dict[str, Any] | None, signed_from: int | None, prev: str, seq: int
    ) -> AuditEvent | None:
        """A cut event when the head says the log held more (or other) records than it does now.
        A head one or two records behind is a crash between a write and its head: harmless."""
        if self.signer is not None and signed_from is None:
            if seq == 0 or not self._tail_signed():
                return None  # a new log, or one from before signing: it starts to be signed now
            reason = "the head is missing" if head is None else "the head is not signed by this key"
            return AuditEvent.cut(
                head.get("seq") if head else None, seq, None, f"{reason} while the log is signed"
            )
        if head is None:
            return None
        if int(head["seq"]) > seq:
            lost = int(head["seq"]) - seq
            return AuditEvent.cut(
                head["seq"], seq, lost, f"the head says seq {head['seq']}, the log ends at {seq}"
            )
        if int(head["seq"]) == seq and head.get("hash") != prev:
            return AuditEvent.cut(head["seq"], seq, None, f"record {seq} is not the one the head names")
        return None

    def _tail_signed(self) -> bool:
        with open(self.path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            return size > 0 and "mac" in json.loads(_last_line(fh, size))

    def _signed_from(self, head: dict[str, Any] | None) -> int | None:
        if self.signer is None or not head or "signed_from" not in head:
            return None
        if not self.signer.check(
            head.get("mac"), "head", head.get("seq"), head.get("hash"), head["signed_from"]
        ):
            return None  # a head this key did not sign says nothing; the witnesses keep the truth
        return int(head["signed_from"])

    def _write(self, fh: IO[bytes], prev: str, seq: int, event: AuditEvent) -> dict[str, Any]:
        record: dict[str, Any] = {
            "seq": seq + 1,
            "ts": now().isoformat(),
            "actor": event.actor,
            "action": event.action,
            "target": event.target,
            "data": event.data,
            "prev": prev,
        }
        record["hash"] = record_hash(record)
        if self.signer is not None:
            record["mac"] = self.signer.mac("record", record["hash"])
        fh.seek(0, os.SEEK_END)
        fh.write(canonical(record) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
        return record

    def write_head(self, record: dict[str, Any], signed_from: int | None) -> None:
        head: dict[str, Any] = {"seq": record["seq"], "hash": record["hash"]}
        if self.signer is not None and signed_from is not None:
            head["signed_from"] = signed_from
            head["mac"] = self.signer.mac("head", record["seq"], record["hash"], signed_from)
        write_json(self.head_path, head)

    def signed_from(self) -> int | None:
        return self._signed_from(read_json(self.head_path))

    def witness(self, kind: str, record: dict[str, Any]) -> None:
        if self.witnesses is not None:
            self.witnesses.send(kind, record["seq"], record["hash"])

    # -- anchor (where the live log starts after retention) -------------------------------------

    def anchor(self) -> dict[str, Any] | None:
        return read_json(self.anchor_path)

    def write_anchor(self, seq: int, prev: str, archive: str) -> None:
        anchor: dict[str, Any] = {"seq": seq, "prev": prev, "archive": archive}
        if self.signer is not None:
            anchor["mac"] = self.signer.mac("anchor", seq, prev, archive)
        write_json(self.anchor_path, anchor)

    def _sign_anchor(self) -> None:
        anchor = self.anchor()
        if anchor and self.signer is not None and "mac" not in anchor:
            self.write_anchor(int(anchor["seq"]), str(anchor["prev"]), str(anchor.get("archive", "")))

    def _anchor_start(self) -> tuple[str, int]:
        anchor = self.anchor()
        if anchor:
            return str(anchor["prev"]), int(anchor["seq"]) - 1
        return GENESIS, 0

    # -- the last record, and a torn one ---------------------------------------------------------

    def _tail(self, fh: IO[bytes]) -> tuple[str, int]:
        """Hash and sequence number of the last record (reading backwards, not the whole file).
        A partial last line, left by a crash mid-write, is cut off and the cut recorded."""
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return self._anchor_start()
        fh.seek(size - 1)
        if fh.read(1) != b"\n":
            return self._recover(fh, size)
        last = _last_line(fh, size)
        record = json.loads(last)
        return str(record["hash"]), int(record["seq"])

    def _recover(self, fh: IO[bytes], size: int) -> tuple[str, int]:
        keep = _last_newline(fh, size) + 1
        fh.seek(keep)
        partial = fh.read(size - keep)
        if keep:
            prev, seq = _chain_end(json.loads(_last_line(fh, keep)))
        else:
            prev, seq = self._anchor_start()
        torn = self.dir / "torn"
        torn.mkdir(exist_ok=True)
        kept_as = torn / f"after-{seq:09d}-{now().strftime('%Y%m%dT%H%M%S%f')}.partial"
        kept_as.write_bytes(partial)
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
        log.warning(
            "audit log %s ended in a partial line (%d bytes, kept in %s); cut off after seq %d",
            self.path,
            len(partial),
            kept_as,
            seq,
        )
        event = AuditEvent.recovered(
            len(partial), hashlib.sha256(partial).hexdigest(), seq, f"torn/{kept_as.name}"
        )
        record = self._append(fh, prev, seq, event)
        self.witness("recovered", record)
        return _chain_end(json.loads(_last_line(fh, fh.seek(0, os.SEEK_END))))

    # -- reading ---------------------------------------------------------------------------------

    def export(self, out: Path | None = None) -> str:
        """The live log plus a trailer that pins its length and head (JSON lines)."""
        with self.locked():
            data = self.path.read_text(encoding="utf-8") if self.path.exists() else ""
        text = data + trailer(data, self.anchor(), self.signer)
        if out is not None:
            out.write_text(text, encoding="utf-8")
        return text

    def verify(self, path: Path | None = None) -> VerifyResult:
        """The live log with its anchors, archives and witnesses, or (``path``) an exported file,
        which must end in its trailer. See ``appliance.audit.verify``."""
        from appliance.audit.verify import verify_file, verify_log

        if path is not None:
            return verify_file(path, require_trailer=True, signer=self.signer)
        return verify_log(self)

    def rotate(self, retention_days: int, now: datetime | None = None) -> dict[str, Any]:
        """Apply retention: see ``appliance.audit.retention.rotate``."""
        from appliance.audit.retention import rotate

        return rotate(self, retention_days, now)


def _chain_end(record: dict[str, Any]) -> tuple[str, int]:
    return str(record["hash"]), int(record["seq"])


def _last_newline(fh: IO[bytes], size: int) -> int:
    """Offset of the last ``\\n`` before ``size``, or -1."""
    block = min(size, 65536)
    while True:
        fh.seek(size - block)
        found = fh.read(block).rfind(b"\n")
        if found >= 0:
            return size - block + found
        if block == size:
            return -1
        block = min(size, block * 2)


def _last_line(fh: IO[bytes], size: int) -> bytes:
    """The last complete line of the first ``size`` bytes, which end in ``\\n``."""
    start = _last_newline(fh, size - 1) + 1
    fh.seek(start)
    return fh.read(size - start)
