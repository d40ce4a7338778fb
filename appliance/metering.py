"""Token metering per user, group and API key per day, and quotas enforced with 429.

Usage lands in the ``usage`` table as one counter row per (UTC day, subject), subject being
``user:NAME``, ``group:NAME`` (every group of the user, transitively, at the time of the request)
or ``key:ID``. Quotas: tokens per day (checked against today's counters before a request runs;
before a generation its prompt plus ``max_tokens`` is reserved, so concurrent requests cannot
together overshoot, and given back once the real usage is recorded) and requests per minute (a
moving window). Counters and reservations live where every replica sees them: the usage rows in
the DB (one atomic upsert per request), the reservations in ``Leases`` and the per-minute windows
in a ``limits`` storage, both in Redis in scale mode (``redis.url``) and in this process otherwise.
A reservation has a time to live, so one held by a replica that died is given back when it ends.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, func, select

from appliance.db import quotas, usage
from appliance.domain import InvalidRequest, NotFound, Overloaded, Principal
from appliance.security.throttle import RateWindows
from appliance.sharedstate import CapReached, Held, Leases, LocalLeases

REPORT_FIELDS = ("day", "subject", "requests", "prompt_tokens", "completion_tokens", "total_tokens")


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def seconds_to_midnight() -> float:
    current = datetime.now(UTC)
    tomorrow = datetime.combine(current.date() + timedelta(days=1), datetime.min.time(), UTC)
    return max(1.0, (tomorrow - current).total_seconds())


def subjects_of(principal: Principal) -> list[str]:
    out = [f"user:{principal.name}", *(f"group:{g}" for g in principal.groups)]
    if principal.key_id is not None:
        out.append(f"key:{principal.key_id}")
    return out


def _upsert(dialect: str) -> Callable[..., Any]:
    """The dialect's INSERT that takes ON CONFLICT DO UPDATE (SQLite and PostgreSQL both have one)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def _check_subject(subject: str) -> str:
    kind, _, name = subject.partition(":")
    if kind not in ("user", "group") or not name:
        raise InvalidRequest(f"quota subject must be user:NAME or group:NAME, not {subject!r}")
    return subject


@dataclass(frozen=True)
class Reservation:
    subjects: tuple[str, ...]
    tokens: int
    lease: Held


class Metering:
    def __init__(
        self,
        engine: Engine,
        default_tokens_per_day: int = 0,
        default_rpm: int = 0,
        leases: Leases | None = None,
        windows_storage: str = "memory://",
        hold_ttl_s: float = 900.0,
    ) -> None:
        """``leases``: where token reservations are held (default: this process); ``windows_storage``:
        the ``limits`` storage of the per-minute windows (``redis://…`` to share them);
        ``hold_ttl_s``: the longest a reservation lives (past the longest a generation may take)."""
        self.engine = engine
        self.default_tokens_per_day = default_tokens_per_day
        self.default_rpm = default_rpm
        self._windows = RateWindows(windows_storage, "quota")
        self._leases: Leases = leases if leases is not None else LocalLeases()
        self.hold_ttl_s = hold_ttl_s

    # -- recording --------------------------------------------------------------------------------

    def record_usage(
        self,
        principal: Principal,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        requests: int = 1,
        day: str | None = None,
    ) -> None:
        """Add one finished request's tokens to the user's, each group's and the key's counters."""
        day = day or today()
        rows = [
            {
                "day": day,
                "subject": subject,
                "requests": requests,
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
            }
            for subject in subjects_of(principal)
        ]
        stmt = _upsert(self.engine.dialect.name)(usage).values(rows)
        # One statement, atomic under concurrency on both SQLite and PostgreSQL.
        stmt = stmt.on_conflict_do_update(
            index_elements=[usage.c.day, usage.c.subject],
            set_={
                "requests": usage.c.requests + stmt.excluded.requests,
                "prompt_tokens": usage.c.prompt_tokens + stmt.excluded.prompt_tokens,
                "completion_tokens": usage.c.completion_tokens + stmt.excluded.completion_tokens,
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)

    # -- quotas -----------------------------------------------------------------------------------

    def set_quota(
        self, subject: str, tokens_per_day: int | None = None, requests_per_minute: int | None = None
    ) -> dict[str, Any]:
        _check_subject(subject)
        values = {"tokens_per_day": tokens_per_day, "requests_per_minute": requests_per_minute}
        stmt = _upsert(self.engine.dialect.name)(quotas).values(subject=subject, **values)
        # One statement: two replicas setting the same quota at once cannot collide on the key.
        stmt = stmt.on_conflict_do_update(index_elements=[quotas.c.subject], set_=values)
        with self.engine.begin() as conn:
            conn.execute(stmt)
        return {
            "subject": subject,
            "tokens_per_day": tokens_per_day,
            "requests_per_minute": requests_per_minute,
        }

    def delete_quota(self, subject: str) -> None:
        with self.engine.begin() as conn:
            if not conn.execute(delete(quotas).where(quotas.c.subject == subject)).rowcount:
                raise NotFound(f"no quota for {subject!r}")

    def list_quotas(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(quotas).order_by(quotas.c.subject)).all()
        return [dict(r._mapping) for r in rows]

    def _limits(self, principal: Principal) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """For each of the principal's subjects with a quota: (tokens per day, spent today), and
        requests per minute."""
        subjects = [f"user:{principal.name}", *(f"group:{g}" for g in principal.groups)]
        with self.engine.connect() as conn:
            rows = {r.subject: r for r in conn.execute(select(quotas).where(quotas.c.subject.in_(subjects)))}
            spent = {
                r.subject: int(r.tokens)
                for r in conn.execute(
                    select(
                        usage.c.subject,
                        (usage.c.prompt_tokens + usage.c.completion_tokens).label("tokens"),
                    ).where(usage.c.day == today(), usage.c.subject.in_(subjects))
                )
            }
        tokens: dict[str, tuple[int, int]] = {}
        rpm_limits: dict[str, int] = {}
        for subject in subjects:
            row = rows.get(subject)
            is_user = subject.startswith("user:")
            tpd = (
                row.tokens_per_day if row is not None else (self.default_tokens_per_day if is_user else None)
            )
            rpm = row.requests_per_minute if row is not None else (self.default_rpm if is_user else None)
            if tpd:
                tokens[subject] = (tpd, spent.get(subject, 0))
            if rpm:
                rpm_limits[subject] = rpm
        return tokens, rpm_limits

    def check_quota(self, principal: Principal) -> None:
        """Raise Overloaded (429 + Retry-After) when the caller is over a quota; otherwise count
        this request in the per-minute windows. Admins are never limited."""
        if principal.is_admin:
            return
        tokens, rpm_limits = self._limits(principal)
        for subject, (tpd, spent) in tokens.items():
            if spent >= tpd:
                raise Overloaded(
                    f"daily token quota of {subject} used up ({spent} of {tpd}); resets at 00:00 UTC",
                    retry_after=seconds_to_midnight(),
                )
        rates = {subject: f"{rpm}/minute" for subject, rpm in rpm_limits.items()}
        for subject, rate in rates.items():
            if not self._windows.test(rate, subject):
                self._over_rate(subject, rate)
        for subject, rate in rates.items():
            # A hit is atomic per window; one refused here lost a race to another replica.
            if not self._windows.hit(rate, subject):
                self._over_rate(subject, rate)

    def _over_rate(self, subject: str, rate: str) -> None:
        raise Overloaded(
            f"request rate quota of {subject} reached ({rate.replace('/', ' per ')})",
            retry_after=self._windows.reset_in(rate, subject),
        )

    def reserve(self, principal: Principal, tokens: int) -> Reservation | None:
        """Hold ``tokens`` (the prompt plus the most the answer may generate) against the caller's
        daily quotas before a generation starts, so concurrent requests cannot together overshoot
        them: Overloaded (429) when what is spent and held already leaves too little. Give the
        reservation back with ``release`` once the real usage is recorded. None: nothing to hold
        (admins, no token quota)."""
        if principal.is_admin or tokens <= 0:
            return None
        limits, _ = self._limits(principal)
        if not limits:
            return None
        day = today()
        caps = [(f"quota-held:{day}:{subject}", tpd - spent) for subject, (tpd, spent) in limits.items()]
        try:
            lease = self._leases.acquire(caps, tokens, self.hold_ttl_s)
        except CapReached as refused:
            subject = refused.key.split(":", 2)[2]
            tpd, spent = limits[subject]
            raise Overloaded(
                f"daily token quota of {subject} would be exceeded ({spent} used and {refused.held} "
                f"held by running requests of {tpd}; this one may need {tokens})",
                retry_after=seconds_to_midnight() if spent >= tpd else 5.0,
            ) from None
        return Reservation(tuple(limits), tokens, lease)

    def release(self, reservation: Reservation | None) -> None:
        if reservation is not None:
            self._leases.release(reservation.lease)

    # -- reports ----------------------------------------------------------------------------------

    def report(
        self,
        since: str | None = None,
        until: str | None = None,
        subjects: list[str] | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """Counter rows, oldest day first. ``subjects`` limits to those (a user's own report)."""
        query = select(usage).order_by(usage.c.day, usage.c.subject)
        if since:
            query = query.where(usage.c.day >= since)
        if until:
            query = query.where(usage.c.day <= until)
        if subjects is not None:
            query = query.where(usage.c.subject.in_(subjects))
        if kind:
            query = query.where(usage.c.subject.like(f"{kind}:%"))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            {
                "day": r.day,
                "subject": r.subject,
                "requests": r.requests,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "total_tokens": r.prompt_tokens + r.completion_tokens,
            }
            for r in rows
        ]

    def tokens_today(self, subject: str) -> int:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(func.coalesce(func.sum(usage.c.prompt_tokens + usage.c.completion_tokens), 0)).where(
                    usage.c.day == today(), usage.c.subject == subject
                )
            ).scalar_one()
        return int(value)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
