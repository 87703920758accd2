"""Awaits that cross a process, with a time limit that holds even when the other side is hung.

Why not `asyncio.wait_for` or `asyncio.timeout`: they cancel the awaited call and wait for the
cancellation to finish, and cancelling an xoscar call sends a cancel message to the remote
actor and waits for its answer. A process that is stopped (SIGSTOP) or deadlocked never
answers, so the time limit itself hung (seen here with xoscar 0.12.2). Here the call runs as its
own task; when time is up, the task is cancelled and left to end on its own (it does when the
remote process is killed or its connection closes), and the caller goes on at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fleet.errors import Unavailable

T = TypeVar("T")


class DeadlineExceeded(Unavailable):
    """A call to another process did not answer in time (a 503: asking again later may work)."""

    def __init__(self, message: str, code: str | None = "timeout"):
        super().__init__(message, code)


# Calls left behind after their time ran out: referenced until they end, or the loop may drop them.
_ABANDONED: set[asyncio.Future] = set()


def _forget(task: asyncio.Future) -> None:
    _ABANDONED.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" in the logs


async def within(call: Awaitable[T], seconds: float, what: str) -> T:
    """The result of `call`, or DeadlineExceeded("`what` did not answer within N s")."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        # Our own caller went away: the call goes with it, without waiting for it either.
        _abandon(task)
        raise
    if done:
        return task.result()
    _abandon(task)
    raise DeadlineExceeded(f"{what} did not answer within {seconds:g} s")


def _abandon(task: asyncio.Future) -> None:
    task.cancel()
    _ABANDONED.add(task)
    task.add_done_callback(_forget)
