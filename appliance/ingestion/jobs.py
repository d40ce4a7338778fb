"""An ingestion run over several sources, audited. Connectors are resolved by the caller."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from appliance.audit import AuditEvent
from appliance.domain import Connector
from appliance.ingestion.pipeline import IngestReport, Progress


def run_ingest(
    container: Any,
    sources: Sequence[Connector],
    collection: str | None,
    acl: Sequence[str],
    actor: str,
    progress: Progress | None = None,
) -> dict[str, Any]:
    collection = collection or container.settings.rag.default_collection
    acl = list(acl) or container.collections.default_acl(collection)  # the collection's default readers
    total = IngestReport()
    for connector in sources:
        report = container.ingestion.ingest(connector, collection, acl=acl, progress=progress)
        for name in ("added", "updated", "unchanged", "deleted", "chunks"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        total.failed.extend(report.failed)
        total.elapsed_s += report.elapsed_s
    summary = total.as_dict()
    container.audit.append(
        AuditEvent(
            actor, "ingest", collection, {"sources": [c.root for c in sources], "acl": list(acl), **summary}
        )
    )
    return summary
