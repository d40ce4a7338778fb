"""Model servers in child processes: the one base of the llama.cpp and vLLM backends.

``WorkerProcess`` is the ``ManagedProcess``: it starts the server, waits until it answers, notices
a crash, restarts and ends it. ``ProcessBackend`` is the ``InferenceBackend`` around it: a fresh
bearer token for every start (in the environment, never on argv, which ``ps`` shows), the shared
OpenAI client, the health probe, and a restart on the request path when the server died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import select
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

from appliance.domain import Unavailable
from appliance.inference.backends.openai_client import OpenAIChatClient, WorkerLost
from appliance.inference.base import Delta, GenerationParams

log = logging.getLogger(__name__)

# ready(proc, deadline): blocks until the server answers and returns its port (None when the port
# was fixed beforehand); raises Unavailable when the server fails to come up.
Ready = Callable[[subprocess.Popen[str], float], "int | None"]


class WorkerProcess:
    def __init__(
        self,
        label: str,
        argv: list[str],
        env: dict[str, str],
        start_timeout_s: float,
        ready: Ready,
        log_file: Path | None = None,
        prepare: Callable[[], None] | None = None,
    ) -> None:
        """``prepare()`` runs before every start, under the process lock (a new token into
        ``env``, a socket folder)."""
        self.label = label
        self.argv = argv
        self.env = env
        self.start_timeout_s = start_timeout_s
        self._ready = ready
        self._prepare = prepare
        self.log_file = log_file
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self._starts = 0
        self._lock = threading.RLock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def starts(self) -> int:
        return self._starts

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exited(self, within_s: float) -> bool:
        """Whether the process is gone or goes within ``within_s`` (a broken connection and the
        exit status of a killed worker arrive a moment apart)."""
        proc = self.proc
        if proc is None:
            return True
        try:
            proc.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def ensure_running(self) -> bool:
        with self._lock:
            if self.alive():
                return False
            if self.proc is not None:
                log.warning(
                    "%s (pid %s) died with %s; restarting", self.label, self.proc.pid, self.proc.returncode
                )
            if self._prepare is not None:
                self._prepare()
            self._spawn()
            return True

    def _spawn(self) -> None:
        stderr = open(self.log_file, "a") if self.log_file else None  # noqa: SIM115 - owned by the child
        try:
            proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,  # a Ctrl-C of the server reaches the worker only through us
            )
        finally:
            if stderr is not None:
                stderr.close()
        self.proc = proc
        self._starts += 1
        try:
            self.port = self._ready(proc, time.monotonic() + self.start_timeout_s) or self.port
        except BaseException:
            self._end(proc)
            raise

    def kill(self) -> None:
        """End the process at once (SIGKILL): one that stopped answering may never act on SIGTERM
        (a stopped or deadlocked process). The whole process group goes, since the server may have
        children of its own (vLLM's engine processes hold the GPU memory), which no graceful
        shutdown would now stop."""
        with self._lock:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own group: start_new_session
                proc.wait(timeout=10)
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()  # the next start makes a new pipe; this one would leak

    def restart(self) -> None:
        with self._lock:
            self.kill()
            self.ensure_running()

    def close(self) -> None:
        with self._lock:
            if self.proc is not None:
                self._end(self.proc)
                self.proc = None

    @staticmethod
    def _end(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def read_ready_line(proc: subprocess.Popen[str], deadline: float) -> str:
    """The first stdout line of ``proc``, or Unavailable when it exits or the deadline passes."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"the model worker exited with code {proc.returncode} while loading")
        readable, _, _ = select.select([fd], [], [], 0.2)
        if readable:
            data = os.read(fd, 4096)
            if not data and proc.poll() is not None:
                continue
            buf += data
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    raise Unavailable("the model worker did not become ready in time")


class ProcessBackend(ABC):
    """An ``InferenceBackend`` whose model server is a ``WorkerProcess`` speaking the OpenAI chat
    protocol. Subclasses say how the server starts (``argv``, ``env``), when it is ready
    (``_wait_ready``), where it listens (``base_url``, ``uds``) and how tokens are counted."""

    kind: str
    slots: int
    # The variable the server reads its bearer token from: never argv, which ps shows to every user.
    token_env: str
    uds: str | None = None  # a Unix socket the server listens on instead of a loopback port
    _token: str

    def __init__(
        self,
        name: str,
        context_tokens: int,
        request_timeout_s: float,
        replica: int,
        *,
        label: str,
        argv: list[str],
        env: dict[str, str],
        start_timeout_s: float,
        log_file: Path | None = None,
    ) -> None:
        self.name = name
        self.replica = replica
        self.request_timeout_s = request_timeout_s
        self._context_tokens = context_tokens
        self.process = WorkerProcess(
            label, argv, env, start_timeout_s, self._wait_ready, log_file, prepare=self._prepare
        )
        self._new_token()

    # -- what subclasses provide ----------------------------------------------------------------

    @property
    @abstractmethod
    def base_url(self) -> str:
        """The server's OpenAI API root (``.../v1``)."""

    @abstractmethod
    def _wait_ready(self, proc: subprocess.Popen[str], deadline: float) -> int | None:
        """Block until the just-started server answers; its port, or None when fixed before."""

    @abstractmethod
    def count_tokens(self, text: str) -> int: ...

    def _load(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """What ``start()`` needs in this process before the server starts (cheap to repeat)."""

    def _prepare(self) -> None:
        """Runs before every start of the server, under the process lock."""
        # A fresh token per start: a stale client of a dead server can't talk to its successor.
        self._new_token()

    def _answers(self, timeout_s: float) -> bool:
        # The server's own OpenAI endpoint with the token: a hung server keeps its pid, not this.
        return self.client.health("/models", timeout_s)

    def _release(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """What ``close()`` frees besides the process (idempotent)."""

    # -- the InferenceBackend contract ----------------------------------------------------------

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @property
    def token(self) -> str:
        return self._token

    @property
    def client(self) -> OpenAIChatClient:
        return OpenAIChatClient(self.base_url, self._token, self.name, self.request_timeout_s, self.uds)

    def _new_token(self) -> None:
        self._token = secrets.token_urlsafe(24)
        self.process.env[self.token_env] = self._token

    def start(self) -> None:
        self._load()
        self.process.ensure_running()

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "model": self.name,
            "replica": self.replica,
            "alive": self.process.alive(),
            "pid": self.process.pid,
            "starts": self.process.starts,
        }

    def probe(self, timeout_s: float) -> bool:
        return self.process.alive() and self._answers(timeout_s)

    async def chat(
        self, messages: list[dict[str, str]], params: GenerationParams
    ) -> AsyncGenerator[Delta, None]:
        await asyncio.to_thread(self.process.ensure_running)
        try:
            async for delta in self.client.chat(messages, params):
                yield delta
        except WorkerLost as exc:
            if await asyncio.to_thread(self.process.exited, 1.0):
                # Bring it back now rather than on the next request; this answer is lost either way.
                threading.Thread(target=self._restart_quietly, daemon=True).start()
                raise WorkerLost(
                    "the model worker crashed during the answer; it is restarting, retry"
                ) from exc
            raise

    def _restart_quietly(self) -> None:
        try:
            self.process.ensure_running()
        except Exception:  # noqa: BLE001 - the health checker tries again
            log.exception("restarting %s failed", self.process.label)

    def close(self) -> None:
        self.process.close()
        self._release()
