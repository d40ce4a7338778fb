"""Usage reports and quotas."""

from __future__ import annotations

from pydantic import BaseModel, Field

from appliance.api.schemas.common import Paged


class UsageRow(BaseModel):
    day: str
    subject: str = Field(description="user:NAME, group:NAME or key:ID")
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class UsageReport(BaseModel):
    data: list[UsageRow]


class Quota(BaseModel):
    subject: str = Field(pattern="^(user|group):.+$", description="user:NAME or group:NAME")
    tokens_per_day: int | None = Field(None, ge=1)
    requests_per_minute: int | None = Field(None, ge=1)


class QuotaList(Paged):
    data: list[Quota]
