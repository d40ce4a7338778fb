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
    name: str  # the model name clients use

    def start(self) -> None:
        """Load the model; cheap to call again."""
        ...

    def health(self) -> dict[str, Any]: ...

    def chat(self, messages: list[dict[str, str]], params: GenerationParams) -> AsyncIterator[Delta]:
        """Stream the assistant's reply to ``messages`` (OpenAI roles: system, user, assistant)."""
        ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def context_tokens(self) -> int: ...

    def stop(self) -> None: ...
