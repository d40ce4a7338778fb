"""Every torch call runs on one thread, whoever calls (see appliance.embeddings.base)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from appliance.embeddings.base import on_torch_thread


def test_calls_from_many_threads_run_on_one_other_thread() -> None:
    with ThreadPoolExecutor(4) as callers:
        ran_on = set(callers.map(lambda _: on_torch_thread(threading.get_ident), range(16)))
    assert len(ran_on) == 1
    assert ran_on != {threading.get_ident()}


def test_a_call_from_the_torch_thread_runs_at_once_and_errors_reach_the_caller() -> None:
    # Nested: the embedder's start() runs inside an embedding call; queueing it would deadlock.
    outer, inner = on_torch_thread(lambda: (threading.get_ident(), on_torch_thread(threading.get_ident)))
    assert outer == inner

    def fail() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        on_torch_thread(fail)
    assert on_torch_thread(lambda: 42) == 42  # the thread survives an error
