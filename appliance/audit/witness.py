"""Witnesses: places outside the audit directory that receive every checkpoint, signed, so that
cutting, rewriting or deleting the log is caught by comparing it with them.

A witness entry is one JSON object: ``log`` (which appliance's log), ``kind`` (``start`` when the
log begins to be signed, ``checkpoint``, ``retention``, ``recovered``), ``seq`` and ``hash`` of a
record the log must still hold (or have archived), ``ts`` and ``mac``. File witnesses are read
back by ``verify``; syslog hands the entries to whatever collects the host's logs (a SIEM), which
this process cannot read back.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from appliance.audit.records import Signer, append_line, now, read_lines

log = logging.getLogger(__name__)


class Witness(Protocol):
    name: str

    def send(self, entry: dict[str, Any]) -> None:
        """Deliver one signed entry; raises OSError when it could not."""
        ...

    def entries(self) -> list[dict[str, Any]] | None:
        """What this witness holds, oldest first; None when it cannot be read back (syslog)."""
        ...


class FileWitness:
    """An append-only JSON-lines file, ideally on storage the appliance's account cannot rewrite
    (a WORM mount, another host's share)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)

    def send(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_line(self.path, entry)

    def entries(self) -> list[dict[str, Any]] | None:
        found = read_lines(self.path)
        if found is None:
            raise ValueError(f"witness {self.path} has an unreadable line")
        return found


class SyslogWitness:
    """Entries as syslog messages (facility ``auth``), for a collector that keeps them."""

    def __init__(self, address: str | tuple[str, int]) -> None:
        self.address = address
        where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
        self.name = f"syslog:{where}"
        self._handler: logging.handlers.SysLogHandler | None = None

    def send(self, entry: dict[str, Any]) -> None:
        if self._handler is None:
            self._handler = logging.handlers.SysLogHandler(
                self.address, facility=logging.handlers.SysLogHandler.LOG_AUTH
            )
        record = logging.LogRecord(
            "appliance.audit", logging.INFO, __file__, 0, "appliance-audit: %s", (json.dumps(entry),), None
        )
        self._handler.emit(record)

    def entries(self) -> list[dict[str, Any]] | None:
        return None


def parse_witness(spec: str) -> Witness:
    """``syslog`` (the local /dev/log), ``syslog:/path/to/socket``, ``syslog:HOST:PORT`` (UDP), or an
    absolute path of a file."""
    if spec == "syslog":
        return SyslogWitness("/dev/log")
    if spec.startswith("syslog:"):
        rest = spec.removeprefix("syslog:")
        if rest.startswith("/"):
            return SyslogWitness(rest)
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"audit witness {spec!r}: use syslog, syslog:/socket/path or syslog:HOST:PORT")
        return SyslogWitness((host, int(port)))
    path = Path(spec).expanduser()
    if not path.is_absolute():
        raise ValueError(f"audit witness {spec!r}: a file witness needs an absolute path")
    return FileWitness(path)


class Witnesses:
    """Every witness of one log: signs entries and hands them out; reads back those it can."""

    def __init__(self, signer: Signer, witnesses: Sequence[Witness]) -> None:
        self.signer = signer
        self.witnesses = list(witnesses)

    def entry(self, kind: str, seq: int, hash_: str) -> dict[str, Any]:
        log_id = self.signer.log_id
        return {
            "log": log_id,
            "kind": kind,
            "seq": seq,
            "hash": hash_,
            "ts": now().isoformat(),
            "mac": self.signer.mac("witness", log_id, kind, seq, hash_),
        }

    def send(self, kind: str, seq: int, hash_: str) -> None:
        """To every witness. One that fails is logged, not fatal: the record is already in the
        log and in the other witnesses, and an audited action must not fail for it."""
        entry = self.entry(kind, seq, hash_)
        for witness in self.witnesses:
            try:
                witness.send(entry)
            except OSError:
                log.exception("audit witness %s did not take checkpoint %d", witness.name, seq)

    def recorded(self) -> tuple[list[dict[str, Any]], str]:
        """This log's entries from every readable witness, and why not when one is forged or
        unreadable (then the list is empty)."""
        out: list[dict[str, Any]] = []
        for witness in self.witnesses:
            try:
                found = witness.entries()
            except (OSError, ValueError) as exc:
                return [], f"witness {witness.name} cannot be read: {exc}"
            for entry in found or ():
                if entry.get("log") != self.signer.log_id:
                    continue  # another appliance's log sharing the witness
                if not self.signer.check(
                    entry.get("mac"),
                    "witness",
                    entry.get("log"),
                    entry.get("kind"),
                    entry.get("seq"),
                    entry.get("hash"),
                ):
                    return (
                        [],
                        f"witness {witness.name} holds an entry for seq {entry.get('seq')} that this key did not sign",
                    )
                out.append(entry)
        return out, ""
