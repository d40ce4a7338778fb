"""What an ingestion job does, rebuilt from its JSON payload.

A job is queued as a payload (``{"op": "ingest" | "sync" | "upload" | "reindex", ...}``) and turned
into its work only when it starts: on the writer thread of ``serve``, or on an ``appliance worker``
that has nothing but the payload and the shared database to go by. Connectors are built then, with
the reach recorded at submission (``admin``) or, for a registered source, its registrant's as it is
when the sync starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from appliance.domain import Connector, InvalidRequest, NotFound, SourceItem
from appliance.ingestion.jobs import Job, Work

if TYPE_CHECKING:
    from appliance.ingestion.service import IngestionJobs
    from appliance.security.secrets import SecretBox

# What a job runs on: its connectors, the readers it gives, only these items (reindex), forced.
Plan = tuple[list[Connector], list[str], list[SourceItem] | None, bool]


def ingest_payload(
    box: SecretBox | None,
    specs: Sequence[str],
    options: dict[str, Any] | None,
    admin: bool,
    acl: Sequence[str],
) -> dict[str, Any]:
    """An ingest job's payload. Specs and options are sealed as a registered source's are (the
    payload may wait in Redis); a worker opens them with the same key, from the shared secrets."""
    return {
        "op": "ingest",
        "specs": [box.seal_spec(s) if box else s for s in specs],
        "options": box.seal_options(options) if box and options else options,
        "admin": admin,
        "acl": list(acl),
    }


def job_work(jobs: IngestionJobs, payload: dict[str, Any]) -> Work:
    """The work of a job: plan its connectors when it starts, then ``IngestionJobs.run`` them."""

    def work(job: Job) -> dict[str, Any]:
        connectors, acl, items, force = _plan(jobs, payload)
        return jobs.run(connectors, job.collection, acl, job.actor, job.progress, job.cancel, items, force)

    return work


def _plan(jobs: IngestionJobs, payload: dict[str, Any]) -> Plan:
    acl = [str(a) for a in payload.get("acl") or []]
    match payload["op"]:
        case "ingest":
            return _connectors(jobs, payload), acl, None, False
        case "sync":
            source = jobs.sources.get(payload["source_id"])  # as it is when the job starts
            return [jobs.stored(source)], source.acl, None, False
        case "upload":
            return [jobs.connectors.upload(payload["uri"])], acl, None, False
        case "reindex":
            rec = jobs.ledger.get(payload["document_id"])
            if rec is None:
                raise NotFound(f"no document {payload['document_id']!r}")
            if rec.uri.startswith("upload://"):
                connector: Connector = jobs.connectors.upload(rec.uri)
            else:
                connector = jobs.connectors.for_source(rec.source)
            try:
                item = find_item(connector, rec.uri)
            except BaseException:
                connector.close()
                raise
            return [connector], rec.acl, [item], True
        case op:
            raise InvalidRequest(f"unknown job operation {op!r}")  # fails the job, not the worker


def _connectors(jobs: IngestionJobs, payload: dict[str, Any]) -> list[Connector]:
    box = jobs.sources.box
    options = payload.get("options")
    if box and options:
        options = box.unseal_options(options)
    connectors: list[Connector] = []
    try:
        for sealed in payload["specs"]:
            spec = box.unseal(sealed) if box else sealed
            connectors.append(jobs.connectors.for_source(spec, options, admin=payload["admin"]))
    except BaseException:
        for c in connectors:
            c.close()
        raise
    return connectors


def find_item(connector: Connector, uri: str) -> SourceItem:
    for item in connector.discover():
        if item.uri == uri:
            return item
    raise NotFound(f"{uri} is no longer at its source")
