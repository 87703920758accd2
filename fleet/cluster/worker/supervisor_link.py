"""A worker's line to its supervisor: it joins, sends heartbeats, and finds the supervisor again
after it restarts.

A restarted supervisor knows no worker: the first heartbeat it gets is answered "unknown", and
the worker joins again, reporting the replicas it still runs (the supervisor adopts them, so the
models keep serving). If the supervisor came back at another actor address (it picks a free
port at each start unless given `--actor-port`), the heartbeats fail instead, and the worker
asks the supervisor's API where its actors are now, as it did when it first joined, with the
endpoint it was started with. While the supervisor is away it tries every second."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import xoscar as xo

from fleet.cluster.actor_uids import SUPERVISOR_UID
from fleet.cluster.deadlines import within
from fleet.cluster.worker.resources import machine_resources
from fleet.settings import control_call_timeout_s, heartbeat_interval_s

logger = logging.getLogger(__name__)

RETRY_S = 1.0

Running = Callable[[], Awaitable[list[dict[str, Any]]]]


class SupervisorLink:
    def __init__(self, supervisor_address: str, endpoint: str | None, running: Running,
                 resources: Callable[[], dict[str, Any]] = machine_resources):
        self.supervisor_address = supervisor_address
        self._resources = resources  # what each join and heartbeat reports of the machine
        self._endpoint = endpoint  # the supervisor's API, to find it again; None in `fleet local`
        self._running = running
        self._ref: Any = None
        self._connected = False

    async def _call(self, method: str, *args: Any) -> Any:
        return await within(getattr(self._ref, method)(*args), control_call_timeout_s(),
                            f"the supervisor at {self.supervisor_address}")

    async def join(self, address: str) -> None:
        """Register with the supervisor, reporting the replicas this worker runs."""
        if self._ref is None:
            self._ref = await within(
                xo.actor_ref(address=self.supervisor_address, uid=SUPERVISOR_UID),
                control_call_timeout_s(), f"the supervisor at {self.supervisor_address}")
        await self._call("register_worker", address, self._resources(), await self._running())
        self._connected = True

    async def call(self, method: str, *args: Any) -> Any:
        """A call to the supervisor (reports), with a time limit."""
        return await self._call(method, *args)

    async def run(self, address: str, after_beat: Callable[[], Awaitable[None]]) -> None:
        """Heartbeats for as long as the worker runs (see the top)."""
        while True:
            await asyncio.sleep(heartbeat_interval_s() if self._connected else RETRY_S)
            try:
                if not await self._call("heartbeat", address, self._resources()):
                    logger.info("the supervisor does not know this worker (it restarted, or "
                                "gave it up): joining again")
                    await self.join(address)
                self._connected = True
                await after_beat()
            except Exception as exc:
                if self._connected:
                    logger.warning("lost the supervisor at %s (%s); looking for it",
                                   self.supervisor_address, exc)
                self._connected = False
                await self._find_again(address)

    async def _find_again(self, address: str) -> None:
        if not self._endpoint:
            return
        from fleet import cluster_secret
        from fleet.worker_join import supervisor_actor_address

        secret = cluster_secret.from_environment() or ""
        try:
            found = await asyncio.to_thread(supervisor_actor_address, self._endpoint, secret, 0.0)
        except Exception as exc:  # its API is not back yet
            logger.debug("supervisor's API at %s: %s", self._endpoint, exc)
            return
        if found != self.supervisor_address:
            logger.info("the supervisor's actors are now at %s", found)
            self.supervisor_address, self._ref = found, None
        try:
            await self.join(address)
            logger.info("joined the supervisor at %s again", self.supervisor_address)
        except Exception as exc:
            self._ref = None
            logger.debug("joining the supervisor at %s: %r", self.supervisor_address, exc)
