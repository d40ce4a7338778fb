from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.fixtures.corpus import make_corpus

ROOT = Path(__file__).resolve().parents[1]


def _can_unshare_net() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


UNSHARE_NET = _can_unshare_net()


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No APPLIANCE_* variable of the caller's shell leaks into settings built in-process."""
    for key in list(os.environ):
        if key.startswith("APPLIANCE_"):
            monkeypatch.delenv(key)


def bytes_read() -> int:
    """Bytes this process has read so far (``rchar``): proves a file was refused unread."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env.update(
        APPLIANCE_DATA_DIR=str(data_dir),
        # Short answers keep the suite fast; the pipeline is the same at any length.
        APPLIANCE_INFERENCE__MAX_TOKENS="48",
        APPLIANCE_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


def run_cli(
    args: list[str], env: dict[str, str], offline: bool = False, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point. ``offline``: inside a network namespace with no route out."""
    cmd = [sys.executable, "-m", "appliance", *args]
    if offline:
        if not UNSHARE_NET:
            pytest.skip("unshare -n is not permitted here")
        cmd = ["unshare", "-n", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def cli_json(args: list[str], env: dict[str, str], offline: bool = False) -> dict:
    result = run_cli([*args, "--json"], env, offline=offline)
    assert result.returncode == 0, f"{args} failed:\nstdout={result.stdout}\nstderr={result.stderr[-3000:]}"
    return json.loads(result.stdout)


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default embedding model's folder, extracted from its package once per session."""
    from appliance.models import resolve_embedding

    return resolve_embedding("default", "all-minilm-l6-v2", tmp_path_factory.mktemp("models")).path


@pytest.fixture(scope="session")
def kb_paragraphs() -> list[str]:
    """Every paragraph of the labelled corpus (tests/fixtures/kb), in file order."""
    kb = Path(__file__).resolve().parent / "fixtures" / "kb"
    return [p.strip() for f in sorted(kb.iterdir()) for p in f.read_text().split("\n\n") if p.strip()]


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, data_dir: Path, admin_key: str, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_key = admin_key
        self.env = base_env(data_dir, APPLIANCE_AUTH__ADMIN_KEY=admin_key, **env)
        self.log = data_dir.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=open(self.log, "w"),  # noqa: SIM115 - lives as long as the server
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def wait_ready(self, deadline_s: float = 180) -> None:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log.read_text()[-4000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready in {deadline_s} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("serve") / "data"
    srv = Server(data_dir, admin_key="kb-test-admin-" + os.urandom(8).hex())
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


# -- servers the services tests start ----------------------------------------------------------


def wait_until_serving(
    proc: subprocess.Popen[bytes],
    log_path: Path,
    connect: Callable[[], object],
    refused: type[BaseException] | tuple[type[BaseException], ...],
    deadline_s: float,
    pause_s: float,
) -> None:
    """Until ``connect()`` succeeds (a server's port opens a moment before it serves); fails with
    the server's log when it exits, with the last refusal past ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{log_path.stem} exited:\n{log_path.read_text()[-3000:]}")
        try:
            connect()
            return
        except refused:
            if time.monotonic() > deadline:
                raise
            time.sleep(pause_s)


def stop_server(proc: subprocess.Popen[bytes], log: IO[str], base: Path, timeout_s: float) -> None:
    """Wait for a server asked to stop (killed past ``timeout_s``), then drop its folder."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    shutil.rmtree(base, ignore_errors=True)


# -- PostgreSQL ---------------------------------------------------------------------------------


@dataclass
class Postgres:
    """A throwaway PostgreSQL server; ``url`` is its ``postgres`` database as the superuser ``kb``."""

    url: str

    def create_database(self) -> str:
        """A new empty database on this server, for one test; its URL."""
        import psycopg

        name = "t_" + os.urandom(6).hex()
        with psycopg.connect(
            self.url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        ) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """Debian's PostgreSQL server (installed by `make`), started as the postgres user in a temporary
    cluster on a free loopback port, for the whole session."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        pytest.skip(
            "PostgreSQL server binaries not installed (`make system-deps`, or apt-get install postgresql)"
        )
    bindir = found[-1].parent
    runner: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        runner = ["runuser", "-u", "postgres", "--"]
    # Not under pytest's tmp dir: that one is private to root (0700), and postgres must reach it.
    base = Path(tempfile.mkdtemp(prefix="kb-pg-"))
    base.chmod(0o755)
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if runner:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
    subprocess.run(
        # --no-sync, fsync=off: a throwaway cluster; durability would only slow the suite down.
        [
            *runner,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "kb",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    log = open(base / "postgres.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            *runner,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-k",
            str(sock),
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        import psycopg

        def login() -> None:
            psycopg.connect(f"host=127.0.0.1 port={port} user=kb dbname=postgres", connect_timeout=2).close()

        wait_until_serving(proc, base / "postgres.log", login, psycopg.OperationalError, 60, 0.2)
        yield Postgres(f"postgresql+psycopg://kb@127.0.0.1:{port}/postgres")
    finally:
        # SIGINT is PostgreSQL's "fast" shutdown (SIGTERM waits for clients); sent to the postmaster
        # itself, since runuser does not pass it on.
        try:
            os.kill(int((data / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
        except (OSError, ValueError, IndexError):
            proc.terminate()
        stop_server(proc, log, base, 30)


# -- Redis ----------------------------------------------------------------------------------------


@dataclass
class Redis:
    """A throwaway Redis server on loopback; ``url(db)`` names one of its databases."""

    port: int
    next_db: int = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def fresh_url(self) -> str:
        """A URL of a database no other test of this session was handed (Redis has 16 by default;
        the server is started with more), flushed first."""
        import redis as redis_client

        self.next_db += 1
        url = self.url(self.next_db)
        redis_client.Redis.from_url(url).flushdb()
        return url


@pytest.fixture(scope="session")
def redis() -> Iterator[Redis]:
    """Debian's redis-server (installed by `make`), on a free loopback port with no persistence, for
    the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (`make system-deps`, or apt-get install redis-server)")
    base = Path(tempfile.mkdtemp(prefix="kb-redis-"))
    port = free_port()
    log = open(base / "redis.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--databases",
            "256",
            "--dir",
            str(base),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        import redis as redis_client

        def ping() -> None:
            redis_client.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping()

        wait_until_serving(proc, base / "redis.log", ping, redis_client.ConnectionError, 30, 0.1)
        yield Redis(port)
    finally:
        proc.terminate()
        stop_server(proc, log, base, 10)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a test's metadata DB lives, once per backend: a SQLite file, or a new database on the
    session's PostgreSQL server. Hand it to ``appliance.db.make_engine``."""
    if request.param == "sqlite":
        return str(tmp_path / "appliance.db")
    return request.getfixturevalue("postgres").create_database()
