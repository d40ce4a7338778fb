"""Stopping an answer for real.

Gradio's ``cancels=`` does not stop a handler that is already running, so the Stop button sets an
``asyncio.Event`` of the session instead, and the answer is read through ``until_stopped``: once
the event is set, the step of the RAG stream in progress is cancelled and the stream closed. That
is the path a client disconnect takes in the REST API: the pool closes the backend stream, the
llama.cpp worker stops at its next token and the model's slot (or the queue place) is free at
once, not when the generation would have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any


class Stops:
    """One stop event per browser session (Gradio's ``session_hash``), while it has an answer
    running. Per session, never shared: one user's Stop cannot end another user's answer."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def start(self, session: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events[session] = event
        return event

    def stop(self, session: str) -> bool:
        event = self._events.get(session)
        if event is None:
            return False
        event.set()
        return True

    def end(self, session: str, event: asyncio.Event) -> None:
        if self._events.get(session) is event:
            del self._events[session]


async def until_stopped(
    events: AsyncGenerator[dict[str, Any], None], stop: asyncio.Event
) -> AsyncIterator[dict[str, Any]]:
    """The events of ``events`` until ``stop`` is set; then the stream is cancelled where it waits
    (for its slot, or the next token) and closed, so its generation ends now."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            done, _ = await asyncio.wait({step, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)  # its cleanup frees the slot now
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        stopper.cancel()
        with contextlib.suppress(RuntimeError):  # already closed by the cancellation above
            await events.aclose()
