"""The chat's Stop ends the generation for real: reading the answer through ``until_stopped``
and setting the stop event cancels the stream where it waits, the llama.cpp worker stops at its
next token (it does not run on to ``max_tokens``) and the pool's slot is free at once."""

from __future__ import annotations

import asyncio

import pytest

from appliance.inference.backends.llamacpp import LlamaCppBackend
from tests.integration.test_inference_pool import (  # noqa: F401 - `worker` is a fixture
    LONG,
    collect,
    make_pool,
    messages,
    wait_until,
    worker,
    worker_health,
)
from ui.chat.streaming import Stops, until_stopped

pytestmark = pytest.mark.slow


def test_stop_cancels_the_generation_and_frees_the_slot(worker: LlamaCppBackend) -> None:  # noqa: F811
    pool = make_pool(worker)
    stops = Stops()
    before = worker_health(worker)["cancelled"]

    async def run() -> int:
        stop = stops.start("session-a")
        assert not stops.stop("session-b")  # another browser session's Stop reaches nothing
        events = pool.chat(messages("Write a long story about a dragon."), LONG)
        pieces = 0
        async for delta in until_stopped(events, stop):  # type: ignore[arg-type]
            if delta.content:
                pieces += 1
                if pieces == 3:
                    assert stops.stop("session-a")
        stops.end("session-a", stop)
        assert pool.stats() == {"outstanding": 0, "waiting": 0}
        return pieces

    pieces = asyncio.run(run())
    assert pieces < LONG.max_tokens  # it stopped, it did not run to the end
    wait_until(lambda: worker_health(worker)["cancelled"] == before + 1 and not worker_health(worker)["busy"])
    assert asyncio.run(collect(pool)).strip()  # the slot serves the next request
    assert 'outcome="cancelled"} 1.0' in pool.metrics.render().decode()
