"""Usage reports (JSON or CSV), quotas, and the audit export."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from appliance.api.deps import AdminDep, AdminViewDep, AuditDep, KeysDep, MeteringDep, PrincipalDep
from appliance.api.schemas.common import COMMON_ERRORS, Limit, Offset, error_responses, page
from appliance.api.schemas.usage import Quota, QuotaList, UsageReport
from appliance.metering import to_csv

router = APIRouter(
    prefix="/api/v1", tags=["usage and audit"], responses={**COMMON_ERRORS, **error_responses(400, 403, 404)}
)


@router.get(
    "/usage",
    response_model=UsageReport,
    summary="Tokens and requests per user, group and key per day (admins: all; others: their own)",
    responses={200: {"content": {"text/csv": {}}}},
)
def usage_report(
    keys: KeysDep,
    metering: MeteringDep,
    principal: PrincipalDep,
    admin: AdminViewDep,
    since: Annotated[str | None, Query(description="First day, YYYY-MM-DD.")] = None,
    until: Annotated[str | None, Query(description="Last day, YYYY-MM-DD.")] = None,
    kind: Annotated[Literal["user", "group", "key"] | None, Query(description="Only these subjects.")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv.")] = "json",
) -> Any:
    own = None
    if admin is None:
        own = [f"user:{principal.name}"] + [f"key:{k['id']}" for k in keys.list(principal.name)]
    rows = metering.report(since, until, own, kind)
    if format == "csv":
        return PlainTextResponse(to_csv(rows), media_type="text/csv")
    return UsageReport.model_validate({"data": rows})


@router.get("/quotas", response_model=QuotaList, summary="Quotas per user and group")
def list_quotas(metering: MeteringDep, _: AdminDep, limit: Limit = 100, offset: Offset = 0) -> Any:
    got = page(metering.list_quotas(), limit, offset)
    return QuotaList(data=got.pop("page"), **got)


@router.put("/quotas", response_model=Quota, summary="Set the quota of user:NAME or group:NAME")
def set_quota(req: Quota, metering: MeteringDep, _: AdminDep) -> Any:
    return metering.set_quota(req.subject, req.tokens_per_day, req.requests_per_minute)


@router.delete("/quotas/{subject}", status_code=204, summary="Remove a quota (defaults apply again)")
def delete_quota(subject: str, metering: MeteringDep, _: AdminDep) -> None:
    metering.delete_quota(subject)


@router.get(
    "/audit/export",
    summary="The audit log as JSON lines with a trailer (verify with `appliance audit verify --file`)",
    # Not response_class: that would document the JSON errors as text/plain too.
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}},
)
async def audit_export(audit: AuditDep, _: AdminDep) -> Any:
    text = await asyncio.to_thread(audit.export)
    return PlainTextResponse(text, media_type="application/x-ndjson")
