"""Where UI sign-in sessions are kept: this process's memory by default, Redis in scale mode, so a
session made on one API replica is the same session on every other, and ending it (sign-out, an
expired or revoked key, a changed password) ends it everywhere.

A session is stored under the SHA-256 of its cookie token, never the token itself (a copy of the
store signs nobody in), with what it signed in with: the user name, the API key's id (None: a
password), the time, and a stamp of the password then. Whether it may still act is decided on
every request from the DB (ui/app.py: ``session_principal``); the store only remembers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from appliance.sharedstate import PREFIX, reachable

if TYPE_CHECKING:
    import redis

_KEY = PREFIX + "ui-session:"


def token_ref(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SessionRecord:
    user: str
    key_id: int | None
    signed_in_at: float
    password_stamp: str | None


class SessionStore(Protocol):
    def put(self, ref: str, record: SessionRecord, ttl_s: float) -> None:
        """Keep a session for at most ``ttl_s`` (it may end sooner: see ``session_principal``)."""
        ...

    def get(self, ref: str) -> SessionRecord | None: ...

    def delete(self, ref: str) -> bool:
        """Forget a session; False when there was none."""
        ...

    def records(self) -> dict[str, SessionRecord]:
        """Every stored session by reference (for a sign-out of all of a user's sessions)."""
        ...


class MemorySessions:
    def __init__(self) -> None:
        self._records: dict[str, tuple[float, SessionRecord]] = {}
        self._mu = threading.Lock()

    def put(self, ref: str, record: SessionRecord, ttl_s: float) -> None:
        with self._mu:
            self._records[ref] = (time.time() + ttl_s, record)

    def get(self, ref: str) -> SessionRecord | None:
        with self._mu:
            found = self._records.get(ref)
            if found is None:
                return None
            if found[0] <= time.time():
                del self._records[ref]
                return None
            return found[1]

    def delete(self, ref: str) -> bool:
        with self._mu:
            return self._records.pop(ref, None) is not None

    def records(self) -> dict[str, SessionRecord]:
        now = time.time()
        with self._mu:
            return {ref: record for ref, (expires, record) in self._records.items() if expires > now}


class RedisSessions:
    """Sessions in Redis; ``namespace`` keeps one sign-in form's sessions (the chat's, the
    console's) apart from another's, as their cookies are."""

    def __init__(self, client: redis.Redis, namespace: str = "/") -> None:
        self.client = client
        self.prefix = f"{_KEY}{namespace}:"

    def put(self, ref: str, record: SessionRecord, ttl_s: float) -> None:
        with reachable("UI sessions"):
            self.client.set(self.prefix + ref, json.dumps(asdict(record)), ex=max(1, int(ttl_s)))

    def get(self, ref: str) -> SessionRecord | None:
        with reachable("UI sessions"):
            raw = self.client.get(self.prefix + ref)
        if raw is None:
            return None
        return SessionRecord(**json.loads(raw))  # type: ignore[arg-type]

    def delete(self, ref: str) -> bool:
        with reachable("UI sessions"):
            return bool(self.client.delete(self.prefix + ref))

    def records(self) -> dict[str, SessionRecord]:
        # SCAN, then one MGET per page: a few round trips however many sessions there are.
        out: dict[str, SessionRecord] = {}
        with reachable("UI sessions"):
            page: list[bytes | str] = []
            for key in self.client.scan_iter(match=self.prefix + "*", count=500):
                page.append(key)
                if len(page) == 500:
                    out |= self._fetch(page)
                    page = []
            if page:
                out |= self._fetch(page)
        return out

    def _fetch(self, keys: list[bytes | str]) -> dict[str, SessionRecord]:
        names = [k.decode() if isinstance(k, bytes) else k for k in keys]
        values = self.client.mget(names)
        return {
            name[len(self.prefix) :]: SessionRecord(**json.loads(raw))  # type: ignore[arg-type]
            for name, raw in zip(names, values, strict=True)  # type: ignore[arg-type]
            if raw is not None  # ended since the scan
        }
