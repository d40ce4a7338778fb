"""Rate limits on what an unauthenticated caller can make the appliance do: failed sign-ins (per
user name and per client address) and the audit records of refused requests (per client address
and in total, so a flood of bad keys cannot grow the audit log without bound).

Counters are moving windows from the ``limits`` library, kept in this process's memory
(``memory://``) by default; in scale mode in the Redis of ``redis.url`` (``storage_uri``), so
several API replicas count the same attempts. A Redis that stops answering makes the check fail
with 503 (``Unavailable``), never lets the attempt through unchecked.
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from appliance.audit import AuditEvent, AuditLog
from appliance.settings import Settings
from appliance.sharedstate import TIMEOUT_S, reachable, redis_url


def storage_uri(settings: Settings) -> str:
    """The ``limits`` storage of the counters: Redis in scale mode, else this process's memory."""
    return redis_url(settings) or "memory://"


@lru_cache(maxsize=256)
def _item(rate: str) -> RateLimitItem:
    return parse(rate)  # e.g. "10/minute"


class RateWindows:
    """Moving windows of any rate, keyed by name: the same storage for every rate."""

    def __init__(self, storage: str, namespace: str) -> None:
        options = {}
        if storage.startswith(("redis://", "rediss://", "unix://")):
            options = {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S}
        self.limiter = MovingWindowRateLimiter(storage_from_string(storage, **options))
        self.namespace = namespace

    def hit(self, rate: str, *keys: str) -> bool:
        with reachable("rate limits"):
            return bool(self.limiter.hit(_item(rate), self.namespace, *keys))

    def test(self, rate: str, *keys: str) -> bool:
        with reachable("rate limits"):
            return bool(self.limiter.test(_item(rate), self.namespace, *keys))

    def reset_in(self, rate: str, *keys: str) -> float:
        """Seconds until the window has room again (at least 1)."""
        with reachable("rate limits"):
            stats = self.limiter.get_window_stats(_item(rate), self.namespace, *keys)
        return max(1.0, stats.reset_time - time.time())


class _Limit:
    def __init__(self, rate: str, storage_uri: str) -> None:
        self.rate = rate
        _item(rate)  # a bad value fails at start
        self.windows = RateWindows(storage_uri, "auth")

    def hit(self, *keys: str) -> bool:
        return self.windows.hit(self.rate, *keys)

    def test(self, *keys: str) -> bool:
        return self.windows.test(self.rate, *keys)


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
