"""Remote backend: any OpenAI-compatible server (another appliance node, MindIE, a vLLM router).

The same ``InferenceBackend`` contract as the process backends, without the process: nothing to
load, restart or end here (``process`` is None). The egress guard still applies: add the host to
``egress.allow``.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from typing import Any

from appliance.inference.backends.openai_client import OpenAIChatClient
from appliance.inference.base import Delta, GenerationParams, ManagedProcess


class RemoteBackend:
    kind = "remote"

    def __init__(
        self,
        name: str,
        url: str,
        api_key: str | None,
        remote_model: str | None = None,
        context_tokens: int = 4096,
        slots: int = 16,
        request_timeout_s: float = 600.0,
        replica: int = 0,
    ) -> None:
        self.name = name
        self.replica = replica
        self.slots = slots
        self._context_tokens = context_tokens
        self.client = OpenAIChatClient(url, api_key, remote_model or name, request_timeout_s)

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @property
    def process(self) -> ManagedProcess | None:
        return None

    def start(self) -> None:
        """Nothing to load; reachability shows in ``health()``."""

    def health(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "model": self.name,
            "replica": self.replica,
            "url": self.client.base_url,
            "alive": self.client.health(),
        }

    def probe(self, timeout_s: float) -> bool:
        # /models with our key: reachable, and still accepting the key (nothing to restart here).
        return self.client.health("/models", timeout_s)

    def count_tokens(self, text: str) -> int:
        # No tokenizer here; three characters a token over-counts English, which errs on the safe side.
        return math.ceil(len(text) / 3)

    async def chat(
        self, messages: list[dict[str, str]], params: GenerationParams
    ) -> AsyncGenerator[Delta, None]:
        async for delta in self.client.chat(messages, params):
            yield delta

    def close(self) -> None:
        """Nothing to release: each request opens and closes its own connection."""
