"""Opening the audit log of a data directory: its key, its witnesses, its files."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.audit.chain import AuditLog
from appliance.audit.records import Signer
from appliance.audit.witness import FileWitness, Witness, Witnesses, parse_witness

if TYPE_CHECKING:
    from appliance.settings import AuditSettings

KEY_FILE = "audit-hmac.key"
# Outside audit/: deleting or rewriting that directory leaves this copy of the checkpoints.
LOCAL_WITNESS = "audit-witness.jsonl"


def secrets_dir(data_dir: Path) -> Path:
    path = data_dir / "secrets"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def audit_key(data_dir: Path, configured: str | None) -> bytes:
    """The configured key, else the data dir's own: 32 random bytes in a 0600 file, made once."""
    if configured:
        return configured.encode("utf-8")
    path = secrets_dir(data_dir) / KEY_FILE
    if not path.exists():
        # Written aside, then linked into place: two processes starting together agree on one
        # key, and nobody reads a half-written file.
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def open_audit_log(settings: AuditSettings, data_dir: Path) -> AuditLog:
    """The data dir's audit log, signed with ``audit.hmac_key`` (or the generated key) and
    witnessed by ``secrets/audit-witness.jsonl`` plus every ``audit.witness``."""
    configured = settings.hmac_key.get_secret_value() if settings.hmac_key else None
    signer = Signer(audit_key(data_dir, configured))
    witnesses: list[Witness] = [FileWitness(secrets_dir(data_dir) / LOCAL_WITNESS)]
    witnesses.extend(parse_witness(spec) for spec in settings.witness)
    return AuditLog(
        data_dir / "audit" / "audit.jsonl",
        checkpoint_every=settings.checkpoint_every,
        signer=signer,
        witnesses=Witnesses(signer, witnesses),
    )
