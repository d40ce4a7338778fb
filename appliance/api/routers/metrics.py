"""``GET /metrics`` in the Prometheus text format.

Metrics name models and show load, so by default they need an admin key like the rest of the
admin API; ``observability.metrics_public`` opens them for a scraper on a trusted network.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from appliance.api.deps import MetricsDep, SettingsDep, get_principal, require_admin
from appliance.api.schemas.common import error_responses

router = APIRouter(tags=["observability"], responses=error_responses(401, 403))


@router.get("/metrics", summary="Prometheus metrics (admin key unless observability.metrics_public)")
async def metrics(request: Request, settings: SettingsDep, registry: MetricsDep) -> Response:
    if not settings.observability.metrics_public:
        require_admin(await get_principal(request))
    return Response(registry.render(), media_type=registry.content_type)
