"""Typed audit events: who (actor) did what (action) to what (target), with the action's fields.

The log adds the time, sequence number, chain hash and signature when it appends one. Actions
the log writes about itself are named here; the others are named by their callers (``ask``,
``search``, ``auth.denied``, ``users.add``, ``POST /api/v1/...``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.domain import Principal

if TYPE_CHECKING:
    from appliance.audit.chain import AuditLog

CHECKPOINT = "audit.checkpoint"
RETENTION = "audit.retention"
RECOVERED = "audit.recovered"
CUT = "audit.cut"
SYSTEM = "system"


@dataclass(frozen=True)
class AuditEvent:
    """Who did what to what. ``data`` holds the action-specific fields."""

    actor: str
    action: str
    target: str
    data: dict[str, Any]

    @classmethod
    def admin(cls, actor: Principal | str, action: str, target: str, **data: Any) -> AuditEvent:
        """An administrative action (users, keys, groups, sources, documents, settings)."""
        name = actor.name if isinstance(actor, Principal) else actor
        return cls(name, action, target, data)

    @classmethod
    def checkpoint(cls, count: int, head: str) -> AuditEvent:
        """Pins the running hash and record count into the chain (also sent to the witnesses)."""
        return cls(SYSTEM, CHECKPOINT, "audit", {"count": count, "head": head})

    @classmethod
    def retention(cls, archived: int, through_seq: int, archive: str, cutoff: str) -> AuditEvent:
        return cls(
            SYSTEM,
            RETENTION,
            "audit",
            {"archived": archived, "through_seq": through_seq, "archive": archive, "cutoff": cutoff},
        )

    @classmethod
    def recovered(cls, truncated_bytes: int, partial_sha256: str, after_seq: int, kept_as: str) -> AuditEvent:
        """A partial last line (a write torn by a crash) was cut off when the log was next written."""
        return cls(
            SYSTEM,
            RECOVERED,
            "audit",
            {
                "truncated_bytes": truncated_bytes,
                "partial_sha256": partial_sha256,
                "after_seq": after_seq,
                "kept_as": kept_as,
            },
        )

    @classmethod
    def cut(cls, head_seq: object, tail_seq: int, lost: int | None, reason: str) -> AuditEvent:
        """The head said the log held more, or other, records than it did when next written:
        records were removed or replaced meanwhile. ``verify`` fails on this record for good."""
        return cls(
            SYSTEM,
            CUT,
            "audit",
            {"head_seq": head_seq, "tail_seq": tail_seq, "records_lost": lost, "reason": reason},
        )


def audit_admin(audit: AuditLog, actor: Principal | str, action: str, target: str, **data: Any) -> None:
    """Record an administrative action (users, keys, groups, sources, documents, settings)."""
    audit.append(AuditEvent.admin(actor, action, target, **data))
