"""Two `appliance serve` processes behind one address: one PostgreSQL, one Redis, one model server.

What a load balancer in front of API replicas relies on: a UI session made on one replica works
on the other, and a sign-out there ends it here; the sign-in throttle and a user's per-minute quota
count requests on both (the 429 comes from the second); /readyz turns 503 when Redis or the DB goes
away and 200 again when they are back.

Setup, all real and on loopback: Debian's PostgreSQL and redis-server (the session fixtures), one
llama.cpp server both replicas reach by URL (``inference.urls``, as vLLM replicas would be), and a
small TCP relay in front of PostgreSQL and of Redis that the test can cut and restore, which is how
"goes away" is made without stopping the servers other tests share. Each replica has its own data
dir: no Qdrant server exists on these machines, so each keeps its own embedded shard (the vectors
are not what this test is about; with ``vectorstore.url`` they would share one Qdrant).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from appliance.inference.backends.llamacpp import LlamaCppBackend
from appliance.models import resolve_llm
from tests.conftest import Postgres, Redis, Server

pytestmark = [pytest.mark.slow, pytest.mark.services]


class Relay:
    """A TCP relay on a loopback port to ``target``; ``cut()`` closes its port and every connection
    through it (the service is gone for its clients), ``restore()`` opens the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._mu = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._mu:
            if self._listener is not None:
                # shutdown first: close() alone leaves a thread blocked in accept() listening on.
                with contextlib.suppress(OSError):
                    self._listener.shutdown(socket.SHUT_RDWR)
                self._listener.close()
                self._listener = None
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._mu:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def until(check: Callable[[], bool], what: str, deadline_s: float = 30.0) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"not before the deadline: {what}")
        time.sleep(0.2)  # polling until the deadline


@pytest.fixture(scope="module")
def model_server() -> Iterator[LlamaCppBackend]:
    """The one llama.cpp server both replicas route to by URL."""
    server = LlamaCppBackend("smol", resolve_llm("default", "smol").path, 1024, 1, 256, tcp=True)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, postgres: Postgres, redis: Redis, model_server: LlamaCppBackend
) -> Iterator[dict[str, Any]]:
    pg_url = postgres.create_database()
    pg_host, pg_port = pg_url.split("@", 1)[1].split("/", 1)[0].split(":")
    redis_url = redis.fresh_url()
    db_relay = Relay((pg_host, int(pg_port)))
    redis_relay = Relay(("127.0.0.1", redis.port))
    env = {
        "APPLIANCE_DATABASE__URL": pg_url.replace(f":{pg_port}/", f":{db_relay.port}/"),
        "APPLIANCE_REDIS__URL": redis_url.replace(f":{redis.port}/", f":{redis_relay.port}/"),
        "APPLIANCE_INFERENCE__BACKEND": "remote",
        "APPLIANCE_INFERENCE__URLS": json.dumps([model_server.base_url]),
        "APPLIANCE_INFERENCE__API_KEY": model_server.token,
        "APPLIANCE_AUTH__LOGIN_RATE": "3/minute",
        "APPLIANCE_INGESTION__SCHEDULER_TICK_S": "3600",
    }
    admin_key = "kb-test-admin-" + os.urandom(8).hex()
    base = tmp_path_factory.mktemp("replicas")
    servers: list[Server] = []
    try:
        # One after the other: the first one migrates the empty database and makes the admin.
        for name in ("one", "two"):
            (base / name).mkdir()
            server = Server(base / name / "data", admin_key=admin_key, **env)
            servers.append(server)
            server.wait_ready()
        yield {"one": servers[0], "two": servers[1], "db": db_relay, "redis": redis_relay}
    finally:
        for server in servers:
            server.stop()
        db_relay.cut()
        redis_relay.cut()


def _admin(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.admin_key}"}


def _add_user(server: Server, name: str, password: str | None = None) -> None:
    user = {"name": name, "role": "employee", "password": password}
    r = httpx.post(f"{server.url}/api/v1/users", json=user, headers=_admin(server), timeout=30)
    assert r.status_code == 201, r.text


def _login(server: Server, user: str, password: str) -> httpx.Response:
    return httpx.post(f"{server.url}/login", data={"username": user, "password": password}, timeout=30)


def _signed_in(server: Server, cookies: httpx.Cookies) -> bool:
    r = httpx.get(f"{server.url}/gradio_api/login_check", cookies=cookies, timeout=30)
    return r.status_code == 200


def test_both_replicas_are_ready_and_route_to_the_shared_model_server(cluster: dict[str, Any]) -> None:
    for name in ("one", "two"):
        r = httpx.get(f"{cluster[name].url}/readyz", timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ready"
        assert set(body["checks"]) == {"store", "inference", "database", "redis"}
        assert all(check["ok"] for check in body["checks"].values())


def test_a_session_made_on_one_replica_works_on_the_other(cluster: dict[str, Any]) -> None:
    one, two = cluster["one"], cluster["two"]
    _add_user(one, "sally", "sally-password-1")
    signed = _login(one, "sally", "sally-password-1")
    assert signed.status_code == 200, signed.text
    cookies = signed.cookies
    assert _signed_in(one, cookies) and _signed_in(two, cookies)
    assert not _signed_in(two, httpx.Cookies())  # no cookie, no session: the check can fail

    # Signing out on the second replica ends the user's sessions (Gradio's sign-out ends all of
    # them), the ones made on the first replica too; another user's session stays.
    other_tab = _login(two, "sally", "sally-password-1").cookies
    _add_user(one, "olga", "olga-password-1")
    olga = _login(one, "olga", "olga-password-1").cookies
    r = httpx.get(f"{two.url}/logout", cookies=cookies, timeout=30)
    assert r.status_code in (200, 302, 307)
    for server in (one, two):
        assert not _signed_in(server, cookies) and not _signed_in(server, other_tab)
        assert _signed_in(server, olga)

    # A password changed through one replica ends the sessions opened on the other.
    signed = _login(two, "sally", "sally-password-1")
    assert signed.status_code == 200 and _signed_in(one, signed.cookies)
    changed = httpx.patch(
        f"{one.url}/api/v1/users/sally",
        json={"password": "sally-password-2"},
        headers=_admin(one),
        timeout=30,
    )
    assert changed.status_code == 200, changed.text
    assert not _signed_in(two, signed.cookies) and not _signed_in(one, signed.cookies)

    # A key session made on one ends on both once the key is revoked through the other.
    key = httpx.post(f"{one.url}/api/v1/keys", json={"user": "sally"}, headers=_admin(one), timeout=30)
    assert key.status_code == 201, key.text
    signed = _login(two, "sally", key.json()["key"])
    assert signed.status_code == 200 and _signed_in(one, signed.cookies)
    revoked = httpx.delete(f"{one.url}/api/v1/keys/{key.json()['id']}", headers=_admin(one), timeout=30)
    assert revoked.status_code == 200, revoked.text
    assert not _signed_in(two, signed.cookies) and not _signed_in(one, signed.cookies)


def test_the_sign_in_throttle_counts_attempts_on_both_replicas(cluster: dict[str, Any]) -> None:
    one, two = cluster["one"], cluster["two"]
    _add_user(one, "tom", "tom-password-1")
    for server in (one, two, one):  # login_rate 3/minute, spread over the replicas
        assert _login(server, "tom", "wrong-password").status_code == 400
    # The right password, on the replica that saw only one failure: refused, the limit is shared.
    assert _login(two, "tom", "tom-password-1").status_code == 400


def test_a_users_quota_holds_across_replicas(cluster: dict[str, Any]) -> None:
    one, two = cluster["one"], cluster["two"]
    _add_user(one, "quinn")
    key = httpx.post(f"{one.url}/api/v1/keys", json={"user": "quinn"}, headers=_admin(one), timeout=30)
    assert key.status_code == 201, key.text
    r = httpx.put(
        f"{two.url}/api/v1/quotas",
        json={"subject": "user:quinn", "requests_per_minute": 2},
        headers=_admin(two),
        timeout=30,
    )
    assert r.status_code == 200, r.text
    quinn = {"Authorization": f"Bearer {key.json()['key']}"}
    answers = [
        httpx.post(f"{server.url}/api/v1/search", json={"query": "holidays"}, headers=quinn, timeout=60)
        for server in (one, two, two)
    ]
    assert [a.status_code == 429 for a in answers] == [False, False, True], [a.text for a in answers]
    refused = answers[2]
    assert 1 <= float(refused.headers["retry-after"]) <= 60
    assert "request rate quota of user:quinn" in refused.json()["error"]["message"]


def _ready(server: Server) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{server.url}/readyz", timeout=30)
    return r.status_code, r.json()


def test_readyz_follows_redis_and_the_database(cluster: dict[str, Any]) -> None:
    one, two = cluster["one"], cluster["two"]
    for relay, check in ((cluster["redis"], "redis"), (cluster["db"], "database")):
        relay.cut()
        try:
            until(lambda: _ready(one)[0] == 503, f"/readyz 503 without {check}")
            until(lambda: _ready(two)[0] == 503, f"/readyz of the second replica without {check}")
            status, body = _ready(two)
            assert body["status"] == "not_ready" and not body["checks"][check]["ok"]
            assert body["checks"][check]["error"]
            assert body["checks"]["store"]["ok"] and body["checks"]["inference"]["ok"]
            # Liveness is not readiness: the process still answers.
            assert httpx.get(f"{one.url}/healthz", timeout=30).status_code == 200
        finally:
            relay.restore()
        for server in (one, two):
            until(lambda s=server: _ready(s)[0] == 200, f"/readyz 200 once {check} is back")  # type: ignore[misc]
