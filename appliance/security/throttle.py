"""Rate limits on what an unauthenticated caller can make the appliance do: failed sign-ins (per
user name and per client address) and the audit records of refused requests (per client address
and in total, so a flood of bad keys cannot grow the audit log without bound).

Counters are moving windows from the ``limits`` library, kept in this process's memory
(``memory://``); several API replicas would share them through a storage URI such as ``redis://``.
"""

from __future__ import annotations

import threading
from typing import Any

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from appliance.audit import AuditEvent, AuditLog


class _Limit:
    def __init__(self, rate: str, storage_uri: str) -> None:
        self.item = parse(rate)  # e.g. "10/minute"; a bad value fails at start
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    def hit(self, *keys: str) -> bool:
        return bool(self.limiter.hit(self.item, *keys))

    def test(self, *keys: str) -> bool:
        return bool(self.limiter.test(self.item, *keys))


class LoginThrottle:
    """Failed UI sign-ins per user name and per client address: past ``rate`` either one refuses
    further attempts, right or wrong, until the window moves on."""

    def __init__(self, rate: str, storage_uri: str = "memory://") -> None:
        self._limit = _Limit(rate, storage_uri)

    def allowed(self, user: str, client: str | None) -> bool:
        return self._limit.test("user", user.lower()) and self._limit.test("client", client or "-")

    def failed(self, user: str, client: str | None) -> None:
        self._limit.hit("user", user.lower())
        self._limit.hit("client", client or "-")


class DeniedAudit:
    """Writes ``auth.denied`` records, at most ``per_client`` per client address and ``total`` in
    all; the ones left out are counted, and the next record written says how many (``suppressed``),
    so the log stays bounded without hiding that a flood happened."""

    def __init__(self, audit: AuditLog, per_client: str, total: str, storage_uri: str = "memory://") -> None:
        self.audit = audit
        self._per_client = _Limit(per_client, storage_uri)
        self._total = _Limit(total, storage_uri)
        self._suppressed = 0
        self._lock = threading.Lock()

    def record(self, actor: str, target: str, client: str | None, data: dict[str, Any]) -> bool:
        """Append the record unless a limit is reached; True when it was written."""
        with self._lock:
            if not (self._per_client.hit("denied", client or "-") and self._total.hit("denied")):
                self._suppressed += 1
                return False
            suppressed, self._suppressed = self._suppressed, 0
        extra = {"suppressed": suppressed} if suppressed else {}
        self.audit.append(AuditEvent(actor, "auth.denied", target, {**data, "client": client, **extra}))
        return True
