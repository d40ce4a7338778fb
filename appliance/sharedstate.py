"""State that several API replicas must share in scale mode, and its one-process twin.

- ``connect(url)``: the Redis client of ``redis.url``, with short timeouts, so an unreachable
  Redis is a quick error (503) and a failed readiness check, never a hung request.
- ``Leases``: capped counters made of leases, one per holder: the admission queue places of a user
  and of a model, the tokens reserved against a daily quota. ``RedisLeases`` keeps them in Redis
  (one Lua script checks every cap and takes the lease atomically, so replicas cannot overshoot
  together); ``LocalLeases`` in this process. Every lease has a time to live: a replica that dies
  holding one (kill -9, a lost node) gives it back when the TTL passes, not never.

Redis keys are ``kb:`` prefixed; a lease's keys are one ZSET (lease id -> expiry) and one HASH
(lease id -> weight) per counter.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from appliance.domain import Unavailable

if TYPE_CHECKING:
    import redis

    from appliance.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "kb:"
# A Redis that does not answer within this long counts as down (readiness, counters).
TIMEOUT_S = 2.0


def redis_url(settings: Settings) -> str | None:
    """``redis.url`` when set: scale mode's shared state; None: everything stays in this process."""
    url = settings.redis.url
    return url.get_secret_value() if url is not None and url.get_secret_value() else None


def connect(url: str) -> redis.Redis:
    import redis as redis_client

    return redis_client.Redis.from_url(
        url, socket_connect_timeout=TIMEOUT_S, socket_timeout=TIMEOUT_S, health_check_interval=30
    )


@contextmanager
def reachable(what: str) -> Iterator[None]:
    """Turn a Redis failure into Unavailable (503): the shared counters cannot be checked, so the
    request is not let through unchecked."""
    import redis as redis_client

    try:
        yield
    except redis_client.RedisError as exc:
        raise Unavailable(f"{what}: Redis is unreachable ({type(exc).__name__})") from exc


@dataclass(frozen=True)
class Held:
    """A lease taken on every one of ``keys``; give it to ``release``."""

    keys: tuple[str, ...]
    id: str
    weight: int


class CapReached(Exception):  # noqa: N818 - an answer, not a failure
    """``acquire`` refused: counter ``key`` holds ``held`` already and its cap is ``cap``."""

    def __init__(self, key: str, held: int, cap: int) -> None:
        super().__init__(f"{key}: {held} held of {cap}")
        self.key, self.held, self.cap = key, held, cap


class Leases(Protocol):
    def acquire(self, caps: Sequence[tuple[str, int]], weight: int = 1, ttl_s: float = 600.0) -> Held:
        """Take ``weight`` on every counter of ``caps`` (key, cap), all or none; raises
        ``CapReached`` for the first counter that would pass its cap."""
        ...

    def release(self, held: Held | None) -> None:
        """Give a lease back; idempotent, and None is nothing to give back."""
        ...

    def held(self, key: str) -> int:
        """What a counter holds now (live leases only)."""
        ...


class LocalLeases:
    """``Leases`` in this process's memory (the embedded default: one process owns everything)."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[str, tuple[float, int]]] = {}
        self._mu = threading.Lock()

    def _live(self, key: str, now: float) -> dict[str, tuple[float, int]]:
        counter = self._counters.setdefault(key, {})
        for lease_id in [i for i, (expires, _) in counter.items() if expires <= now]:
            del counter[lease_id]
        return counter

    def acquire(self, caps: Sequence[tuple[str, int]], weight: int = 1, ttl_s: float = 600.0) -> Held:
        now = time.monotonic()
        lease_id = uuid.uuid4().hex
        with self._mu:
            for key, cap in caps:
                total = sum(w for _, w in self._live(key, now).values())
                if total + weight > cap:
                    raise CapReached(key, total, cap)
            for key, _ in caps:
                self._counters[key][lease_id] = (now + ttl_s, weight)
        return Held(tuple(k for k, _ in caps), lease_id, weight)

    def release(self, held: Held | None) -> None:
        if held is None:
            return
        with self._mu:
            for key in held.keys:
                counter = self._counters.get(key)
                if counter is not None:
                    counter.pop(held.id, None)
                    if not counter:
                        del self._counters[key]

    def held(self, key: str) -> int:
        with self._mu:
            return sum(w for _, w in self._live(key, time.monotonic()).values())


# KEYS: the counters. ARGV: ttl_s, lease id, weight, then one cap per key. Time is Redis's own
# clock, so replicas with skewed clocks agree on what has expired. Returns {0} or {index, held}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local ttl = tonumber(ARGV[1])
local id = ARGV[2]
local weight = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  local wkey = key .. ':w'
  local expired = redis.call('ZRANGEBYSCORE', key, '-inf', now)
  for _, old in ipairs(expired) do redis.call('HDEL', wkey, old) end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local total = 0
  for _, w in ipairs(redis.call('HVALS', wkey)) do total = total + tonumber(w) end
  if total + weight > tonumber(ARGV[3 + i]) then return {i, total} end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, id)
  redis.call('HSET', key .. ':w', id, weight)
  -- the counter itself goes once its last lease could have expired
  redis.call('EXPIRE', key, math.ceil(ttl) + 1)
  redis.call('EXPIRE', key .. ':w', math.ceil(ttl) + 1)
end
return {0}
"""

_HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local total = 0
for _, id in ipairs(live) do total = total + tonumber(redis.call('HGET', KEYS[1] .. ':w', id) or '0') end
return total
"""


class RedisLeases:
    """``Leases`` in Redis, shared by every replica that names the same Redis database."""

    def __init__(self, client: redis.Redis, what: str = "shared counters") -> None:
        self.client = client
        self.what = what
        self._acquire = client.register_script(_ACQUIRE)
        self._held = client.register_script(_HELD)

    def acquire(self, caps: Sequence[tuple[str, int]], weight: int = 1, ttl_s: float = 600.0) -> Held:
        keys = [PREFIX + k for k, _ in caps]
        lease_id = uuid.uuid4().hex
        with reachable(self.what):
            result = self._acquire(keys=keys, args=[ttl_s, lease_id, weight, *(c for _, c in caps)])
        if int(result[0]):
            index = int(result[0]) - 1
            raise CapReached(caps[index][0], int(result[1]), caps[index][1])
        return Held(tuple(k for k, _ in caps), lease_id, weight)

    def release(self, held: Held | None) -> None:
        if held is None:
            return
        try:
            with reachable(self.what):
                pipe = self.client.pipeline(transaction=True)
                for key in held.keys:
                    pipe.zrem(PREFIX + key, held.id)
                    pipe.hdel(PREFIX + key + ":w", held.id)
                pipe.execute()
        except Unavailable:
            # Called from finally blocks: the lease runs out with its TTL instead.
            log.warning("could not release a lease on %s; it expires with its TTL", ", ".join(held.keys))

    def held(self, key: str) -> int:
        with reachable(self.what):
            return int(self._held(keys=[PREFIX + key]))  # type: ignore[arg-type]
