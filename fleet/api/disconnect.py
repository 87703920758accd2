"""Stop working for a client that has gone away.

A route wrapped with `cancel_on_disconnect` runs as a task beside a listener for the client's
`http.disconnect`; whichever ends first wins. When the client leaves, the route's task is
cancelled, and the cancellation travels down the actor call to the replica, which drops the
sequence from its batch. Streamed answers need no such help: Starlette already notices a
disconnect while it writes the stream, and the stream's own clean-up cancels generation."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request, Response


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def cancel_on_disconnect(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapper(request: Request, *args: Any, **kwargs: Any) -> Response:
        work = asyncio.ensure_future(handler(request, *args, **kwargs))
        watch = asyncio.ensure_future(_wait_for_disconnect(request))
        try:
            await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            work.cancel()
            raise
        finally:
            watch.cancel()
        if not work.done():
            work.cancel()
            # Nobody is listening any more; the status is only for the access log.
            return Response(status_code=499)
        return work.result()

    return wrapper
