"""Shapes every router shares: the error body (for OpenAPI) and a page of a list."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

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


class PageOf(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(description="Items in the whole list.")
    limit: int
    offset: int
