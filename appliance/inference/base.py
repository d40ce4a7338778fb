"""InferenceBackend contract: the OpenAI chat protocol, in process or on the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator
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


class InferenceBackend(Protocol):
    """One replica of a served model. ``slots``: generations it runs at once (1 for a llama.cpp
    worker, ``max_num_seqs`` for vLLM); the pool never gives it more.

    Backends that own a process (llama.cpp, vLLM) also have ``restart()``: kill and start it again,
    which the pool's health checker calls when the process is alive but stopped answering."""

    name: str  # the model name clients use
    kind: str  # "llamacpp", "vllm" or "remote"
    slots: int

    def start(self) -> None:
        """Load the model; cheap to call again."""
        ...

    def ensure_running(self) -> bool:
        """Restart a crashed worker; True when this call (re)started it. Thread-safe."""
        ...

    def health(self) -> dict[str, Any]: ...

    def probe(self, timeout_s: float) -> bool:
        """Whether the model server answers its health endpoint within ``timeout_s``: one cheap
        request, made by the pool's health checker every interval (a hung process is alive but
        fails this)."""
        ...

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> AsyncIterator[Delta]:
        """Stream the assistant's reply to ``messages`` (OpenAI roles: system, user, assistant)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def context_tokens(self) -> int: ...

    def stop(self) -> None: ...
