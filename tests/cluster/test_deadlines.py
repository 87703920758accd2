"""A time limit on a call to another process holds even when the call ignores its cancellation
(as an xoscar call to a stopped process does), and leaves nothing unretrieved behind."""

from __future__ import annotations

import asyncio
import time

import pytest

from fleet.cluster.deadlines import DeadlineExceeded, within


async def _stubborn(release: asyncio.Event) -> str:
    """Like a call whose cancellation waits for an answer that does not come."""
    while True:
        try:
            await release.wait()
            return "late"
        except asyncio.CancelledError:
            continue


def test_a_call_that_never_answers_is_given_up_on_time():
    async def run() -> None:
        release = asyncio.Event()
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="the replica did not answer within 0.2 s") as e:
            await within(_stubborn(release), 0.2, "the replica")
        assert time.monotonic() - started < 1.0
        assert e.value.status_code == 503 and e.value.code == "timeout"
        release.set()  # the abandoned call may end later; nobody waits for it
        await asyncio.sleep(0.01)

    asyncio.run(run())


def test_results_and_errors_pass_through():
    async def fail() -> None:
        raise ValueError("the call's own error")

    async def run() -> None:
        assert await within(asyncio.sleep(0, result=7), 1, "x") == 7
        with pytest.raises(ValueError, match="own error"):
            await within(fail(), 1, "x")

    asyncio.run(run())
