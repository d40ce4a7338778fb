"""Shapes every router shares: the error body (for OpenAPI) and a page of a list."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel, Field

T = TypeVar("T")


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Machine-readable: invalid_request, unauthenticated, forbidden, not_found, ..."
    )
    message: str = Field(description="What went wrong, for a person.")


class ErrorResponse(BaseModel):
    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request (bad value, unknown model or collection name)",
    401: "Missing, invalid or revoked API key",
    403: "The key's role may not do this",
    404: "Not found, or not yours",
    409: "Conflict with the current state",
    413: "Request body over the size limit",
    422: "Request body or parameters fail validation",
    429: "The model is busy and its queue is full; retry after `Retry-After` seconds",
    503: "A model or service is unavailable",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route or router: each status with the JSON error schema."""
    return {c: {"model": ErrorResponse, "description": _DESCRIPTIONS[c]} for c in codes}


COMMON_ERRORS = error_responses(401, 413, 422)


Limit = Annotated[int, Query(ge=1, le=500, description="Page size.")]
Offset = Annotated[int, Query(ge=0, description="Items to skip.")]


class Paged(BaseModel):
    """Where a page sits in its list (``items``/``data`` carry the page itself)."""

    total: int = Field(description="Items in the whole list.")
    limit: int
    offset: int


def page(items: Sequence[Any], limit: int, offset: int) -> dict[str, Any]:
    """One page of a list held in memory (users, groups, keys, quotas, sources: bounded by the
    organisation, not by traffic): the slice plus ``total``, ``limit``, ``offset``."""
    return {
        "page": list(items[offset : offset + limit]),
        "total": len(items),
        "limit": limit,
        "offset": offset,
    }


class PageOf(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Items in the whole list.")
    limit: int
    offset: int
