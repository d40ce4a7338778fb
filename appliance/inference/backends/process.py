"""A model server in a child process: start, wait until it answers, notice a crash, restart, stop.

Shared by the llama.cpp worker and the vLLM server. ``ensure_running()`` is thread-safe and
idempotent: the request path and the pool's health checker both call it, and whichever comes
first after a crash restarts the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from appliance.domain import Unavailable

log = logging.getLogger(__name__)


class WorkerProcess:
    def __init__(
        self,
        label: str,
        argv: list[str],
        env: dict[str, str],
        start_timeout_s: float,
        ready: Callable[[subprocess.Popen[str], float], int | None],
        log_file: Path | None = None,
    ) -> None:
        """``ready(proc, deadline)`` blocks until the server answers and returns its port (or None
        when the port was fixed beforehand); it raises ``Unavailable`` when the server fails."""
        self.label = label
        self.argv = argv
        self.env = env
        self.start_timeout_s = start_timeout_s
        self._ready = ready
        self.log_file = log_file
        self.proc: subprocess.Popen[str] | None = None
        self.port: int | None = None
        self.starts = 0
        self._lock = threading.RLock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

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
        """Start (or restart after a crash). Returns True when this call (re)started it."""
        with self._lock:
            if self.alive():
                return False
            if self.proc is not None:
                log.warning(
                    "%s (pid %s) died with %s; restarting", self.label, self.proc.pid, self.proc.returncode
                )
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
        self.starts += 1
        try:
            self.port = self._ready(proc, time.monotonic() + self.start_timeout_s) or self.port
        except BaseException:
            self._kill(proc)
            raise

    def kill(self) -> None:
        """End the process at once (SIGKILL): for one that stopped answering, which may never act
        on SIGTERM (a stopped or deadlocked process). The whole process group goes, since the
        server may have children of its own (vLLM's engine processes hold the GPU memory), which
        no graceful shutdown would now stop. ``ensure_running()`` then starts a new one."""
        with self._lock:
            proc = self.proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own group: start_new_session
                proc.wait(timeout=10)
            if proc is not None and proc.stdout is not None:
                proc.stdout.close()  # the next start makes a new pipe; this one would leak

    def stop(self) -> None:
        with self._lock:
            if self.proc is not None:
                self._kill(self.proc)
                self.proc = None

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
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
