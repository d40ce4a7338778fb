"""Questions and searches: their tokens go to metering, their record to the audit log. The audit
log itself knows nothing of metering; ``QueryRecorder`` is the one place that does both."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

from appliance.audit.chain import AuditLog
from appliance.audit.events import AuditEvent
from appliance.domain import Principal, ScoredChunk
from appliance.security.acl import filter_hash


class UsageMeter(Protocol):
    """What the recorder needs of ``appliance.metering.Metering``."""

    def record_usage(
        self, principal: Principal, prompt_tokens: int = 0, completion_tokens: int = 0
    ) -> None: ...


class QueryRecorder:
    """``record_queries`` (setting ``audit.enabled``): questions and searches are audited only when
    on; their tokens are metered either way. ``metering`` None: nothing is metered."""

    def __init__(self, audit: AuditLog, metering: UsageMeter | None, record_queries: bool = True) -> None:
        self.audit = audit
        self.metering = metering
        self.record_queries = record_queries

    def record(
        self,
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
        """Meter one chat, ask or search and record it: what was asked, which chunks at which
        document versions came back, under which access filter, and (for answers) the answer's
        hash and tokens."""
        usage = usage or {"prompt_tokens": 0, "completion_tokens": 0}
        if self.metering is not None:
            self.metering.record_usage(
                principal, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            )
        if not self.record_queries:
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
        self.audit.append(AuditEvent(principal.name, action, collection, data))


def audit_query(recorder: QueryRecorder | None, **fields: Any) -> None:
    """``recorder.record(**fields)``, for callers that may have no recorder (tests, tools)."""
    if recorder is not None:
        recorder.record(**fields)
