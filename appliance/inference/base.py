"""Inference contracts: the OpenAI chat protocol, in process or on the wire.

``InferenceBackend`` is one replica of a served model; the pool (``pool.py``) uses nothing of a
backend that is not declared here. Backends that run their model server in a child process
(llama.cpp, vLLM) expose it as a ``ManagedProcess`` for the pool's health checker to supervise;
remote backends have none (``process`` is None).

Lifecycle, for every backend and the pool: a cheap constructor, ``start()`` loads (calling it
again is harmless), ``close()`` releases everything (calling it again is harmless).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 256
    temperature: float = 0.2
    top_p: float = 0.95
    stop: tuple[str, ...] = ()


@dataclass
class Delta:
    """One piece of a streamed answer. The last one carries ``finish_reason`` and ``usage``."""

    content: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


class ManagedProcess(Protocol):
    """A model server in a child process, which its backend starts and the pool supervises.

    Every method is thread-safe: the request path and the pool's health checker both call them,
    and whichever comes first after a crash restarts the process."""

    @property
    def pid(self) -> int | None:
        """The running process's id; None before the first start and after ``close()``."""
        ...

    @property
    def starts(self) -> int:
        """How many times the process was started: ``starts - 1`` restarts."""
        ...

    def alive(self) -> bool:
        """Whether the process exists (it may still be hung: ``InferenceBackend.probe`` tells)."""
        ...

    def ensure_running(self) -> bool:
        """Start the process, or start it again after it died; True when this call started it."""
        ...

    def restart(self) -> None:
        """Kill the process (SIGKILL, whole process group) and start a fresh one: for a process
        that is alive but stopped answering."""
        ...

    def close(self) -> None:
        """End the process (SIGTERM, then SIGKILL); idempotent."""
        ...


class InferenceBackend(Protocol):
    """One replica of a served model."""

    @property
    def name(self) -> str:
        """The model name clients use."""
        ...

    @property
    def kind(self) -> str:
        """``"llamacpp"``, ``"vllm"`` or ``"remote"``."""
        ...

    @property
    def replica(self) -> int:
        """Its index among the replicas of its model (for logs and health)."""
        ...

    @property
    def slots(self) -> int:
        """Generations it runs at once (1 for a llama.cpp worker, ``max_num_seqs`` for vLLM); the
        pool never gives it more."""
        ...

    @property
    def context_tokens(self) -> int:
        """The context window a prompt plus its answer must fit in."""
        ...

    @property
    def process(self) -> ManagedProcess | None:
        """The model server process this backend owns, or None when it owns none (remote)."""
        ...

    def start(self) -> None:
        """Load the model (start the process); cheap to call again."""
        ...

    def health(self) -> dict[str, Any]:
        """What ``/readyz`` and ``doctor`` show: at least ``backend``, ``model``, ``replica`` and
        ``alive``. May make a network call (remote)."""
        ...

    def probe(self, timeout_s: float) -> bool:
        """Whether the model server answers within ``timeout_s``: one cheap request, made by the
        pool's health checker every interval (a hung process is alive but fails this)."""
        ...

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> AsyncGenerator[Delta, None]:
        """Stream the assistant's reply to ``messages`` (OpenAI roles: system, user, assistant).
        Closing the stream early stops the generation."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in a prompt (exact where a tokenizer is at hand, else an
        over-estimate), for fitting sources into ``context_tokens``."""
        ...

    def close(self) -> None:
        """Release the process, sockets and vocabulary; idempotent."""
        ...
