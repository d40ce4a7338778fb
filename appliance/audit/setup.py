"""Opening the audit log of a data directory: its key, its witnesses, its files."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.audit.chain import AuditLog
from appliance.audit.records import Signer
from appliance.audit.witness import FileWitness, Witness, Witnesses, parse_witness
from appliance.security.secrets import private_file, secrets_dir

if TYPE_CHECKING:
    from appliance.settings import AuditSettings

KEY_FILE = "audit-hmac.key"
# Outside audit/: deleting or rewriting that directory leaves this copy of the checkpoints.
LOCAL_WITNESS = "audit-witness.jsonl"


def audit_key(data_dir: Path, configured: str | None) -> bytes:
    """The configured key, else the data dir's own: 32 random bytes in a 0600 file, made once."""
    if configured:
        return configured.encode("utf-8")
    return bytes.fromhex(private_file(secrets_dir(data_dir) / KEY_FILE, lambda: secrets.token_hex(32)))


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
