"""Admission control in front of the inference backends.

A request either gets a model slot, waits in a bounded queue for at most ``queue_timeout_s``, or is
refused at once with ``Overloaded`` (HTTP 429 + Retry-After). It never hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from appliance.domain import NotFound, Overloaded
from appliance.inference.base import Delta, GenerationParams, InferenceBackend


class InferencePool:
    def __init__(self, backends: list[InferenceBackend], max_queue: int, queue_timeout_s: float) -> None:
        if not backends:
            raise ValueError("at least one backend")
        self.backends = {b.name: b for b in backends}
        self.default = backends[0].name
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        # One slot per backend per event loop (the CLI may run several loops in one process).
        self._slots: dict[tuple[int, str], asyncio.Semaphore] = {}
        self._waiting: dict[str, int] = dict.fromkeys(self.backends, 0)

    def backend(self, name: str | None = None) -> InferenceBackend:
        key = name or self.default
        if key not in self.backends:
            raise NotFound(f"model {key!r} is not served here")
        return self.backends[key]

    def start(self) -> None:
        for backend in self.backends.values():
            backend.start()

    def health(self) -> dict[str, Any]:
        return {name: b.health() | {"waiting": self._waiting[name]} for name, b in self.backends.items()}

    async def chat(
        self, messages: list[dict[str, str]], params: GenerationParams, model: str | None = None
    ) -> AsyncIterator[Delta]:
        backend = self.backend(model)
        key = (id(asyncio.get_running_loop()), backend.name)
        slot = self._slots.setdefault(key, asyncio.Semaphore(1))
        if slot.locked() and self._waiting[backend.name] >= self.max_queue:
            raise Overloaded(f"model {backend.name!r} is busy and its queue is full", retry_after=2.0)
        self._waiting[backend.name] += 1
        try:
            await asyncio.wait_for(slot.acquire(), timeout=self.queue_timeout_s)
        except TimeoutError:
            raise Overloaded(
                f"model {backend.name!r} stayed busy for {self.queue_timeout_s:g} s", retry_after=5.0
            ) from None
        finally:
            self._waiting[backend.name] -= 1
        try:
            async for delta in backend.chat(messages, params):
                yield delta
        finally:
            slot.release()

    def stop(self) -> None:
        for backend in self.backends.values():
            backend.stop()
