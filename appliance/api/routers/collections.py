"""Knowledge bases: create (with default readers), list, get, delete."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from appliance.api.deps import AdminDep, ContainerDep, PrincipalDep
from appliance.api.schemas.collections import Collection, CollectionCreate
from appliance.api.schemas.common import COMMON_ERRORS, PageOf, error_responses

router = APIRouter(prefix="/api/v1/collections", tags=["collections"], responses=COMMON_ERRORS)


@router.post(
    "",
    status_code=201,
    response_model=Collection,
    summary="Admin: create a collection with its default readers",
    responses=error_responses(400, 403, 409),
)
async def create_collection(req: CollectionCreate, container: ContainerDep, _: AdminDep) -> Any:
    return await asyncio.to_thread(container.collections.create, req.name, req.default_acl, req.description)


@router.get("", response_model=PageOf[Collection], summary="Collections, by name")
def list_collections(
    container: ContainerDep,
    _: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    items, total = container.collections.list(limit, offset)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/{name}", response_model=Collection, summary="One collection", responses=error_responses(400, 404)
)
def get_collection(name: str, container: ContainerDep, _: PrincipalDep) -> Any:
    return container.collections.get(name)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Admin: delete a collection: its shard directory and its ledger rows",
    responses=error_responses(400, 403, 404),
)
async def delete_collection(name: str, container: ContainerDep, _: AdminDep) -> Response:
    await asyncio.to_thread(container.collections.delete, name)
    return Response(status_code=204)
