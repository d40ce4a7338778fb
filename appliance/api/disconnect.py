"""Cancel a request's work when its client hangs up.

uvicorn never cancels a handler whose client left, so without this a non-streamed answer, or a
stream still waiting for its model slot, would hold that slot or its queue place for nobody.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from appliance.domain import ApplianceError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ClientDisconnected(ApplianceError):
    """The client hung up before its answer was ready. Nobody reads the response; 499 is what
    proxies (nginx) log for it."""

    status, code = 499, "client_closed_request"


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away. The body has been read (FastAPI parsed it), so the next
    ASGI message is the disconnect: waiting for it costs nothing, unlike polling."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:  # noqa: BLE001 - can't tell: never cancel an answer on a guess
        log.debug("cannot watch for the client's disconnect", exc_info=True)
        await asyncio.get_running_loop().create_future()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``work``, cancelled as soon as the client hangs up (then ``ClientDisconnected``). uvicorn
    never cancels a handler whose client left, so without this a non-streamed answer, or a stream
    still waiting for its slot, would hold its model slot or queue place to the end for nobody.
    Cancelling ends the generation: the worker stops at its next token and the slot is free."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)  # its cleanup frees the slot now
    if task.cancelled():
        raise ClientDisconnected("the client closed the connection before the answer was ready")
    return task.result()
