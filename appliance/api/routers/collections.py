"""Knowledge bases: create (with default readers and owner groups), list, get, hand over to
curators, delete. Who may see or manage which one is decided by ``CollectionService``: a
collection the caller can neither read in nor curate answers 404."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from appliance.api.deps import AdminDep, CollectionsDep, CuratorDep, JobsDep, PrincipalDep
from appliance.api.schemas.collections import Collection, CollectionCreate, CollectionUpdate
from appliance.api.schemas.common import COMMON_ERRORS, PageOf, error_responses

router = APIRouter(prefix="/api/v1/collections", tags=["collections"], responses=COMMON_ERRORS)


@router.post(
    "",
    status_code=201,
    response_model=Collection,
    summary="Curator: create a collection owned by your groups, with its default readers",
    responses=error_responses(400, 403, 404, 409),
)
async def create_collection(req: CollectionCreate, collections: CollectionsDep, principal: CuratorDep) -> Any:
    return await asyncio.to_thread(
        collections.create,
        req.name,
        req.default_acl,
        req.description,
        req.owners,
        principal=principal,
    )


@router.get("", response_model=PageOf[Collection], summary="Collections you may read in or curate, by name")
def list_collections(
    collections: CollectionsDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Any:
    items, total = collections.list(limit, offset, principal)
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(
    "/{name}", response_model=Collection, summary="One collection", responses=error_responses(400, 404)
)
def get_collection(name: str, collections: CollectionsDep, principal: PrincipalDep) -> Any:
    return collections.get(name, principal)


@router.patch(
    "/{name}",
    response_model=Collection,
    summary="Admin: set a collection's owner groups, description or BM25 fusion weight",
    responses=error_responses(400, 403, 404),
)
def update_collection(
    name: str, req: CollectionUpdate, collections: CollectionsDep, principal: AdminDep
) -> Any:
    # An explicit null weight clears it (back to retrieval.bm25_weight); an absent one is unchanged.
    weight = req.bm25_weight if "bm25_weight" in req.model_fields_set else ...
    return collections.update(name, req.owners, req.description, bm25_weight=weight, principal=principal)


@router.delete(
    "/{name}",
    status_code=204,
    summary="Curator: delete a collection you curate: its shard directory, ledger rows and sources",
    responses=error_responses(400, 403, 404, 409),
)
async def delete_collection(name: str, jobs: JobsDep, principal: CuratorDep) -> Response:
    await asyncio.to_thread(jobs.delete_collection, principal, name)
    return Response(status_code=204)
