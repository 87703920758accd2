"""The API's routing table: model uid -> replica actor refs, asked of the supervisor once and
cached, so a request costs one actor call to the replica and nothing to the supervisor.

Small requests that come in bursts (embeddings, rerank) share their calls: those that reach
the API in the same turn of its event loop, for the same model, leave as one message
(`ModelActor.call_many`), and their answers come back as one. Each actor message costs CPU in
both processes (serialising, a socket write and read, an actor dispatch); under load that was a
tenth of the API's CPU per request, taken from the engine on a small machine. A lone request
waits for nothing: its group closes at the end of the turn it arrived in. Groups travel on the
replica's channel where there is one (see fleet.cluster.replica_channel for why), else as
actor calls."""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import xoscar as xo
from xoscar.errors import ActorNotExist, ServerClosed

from fleet.api.metrics import FleetMetrics
from fleet.api.replica_channels import ReplicaChannels, StreamInbox
from fleet.api.streams import Replica, ReplicaStream
from fleet.errors import FleetError, Unavailable
from fleet.settings import replica_channels_enabled

logger = logging.getLogger(__name__)

# Errors that mean "that replica is gone": drop the cached route and ask again.
# (An engine's own OSError must not count: it would be retried and reported as unreachable.)
_STALE_ROUTE_ERRORS = (ActorNotExist, ServerClosed, ConnectionError)


class ReplicaRouter:
    def __init__(self, supervisor: Any, metrics: FleetMetrics):
        self._supervisor = supervisor
        self._metrics = metrics
        self._channels = ReplicaChannels(replica_channels_enabled())
        self._routes: dict[str, tuple[list[Replica], itertools.cycle]] = {}
        self._open_groups: dict[tuple[str, str], list[tuple[tuple, asyncio.Future]]] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def invalidate(self, uid: str | None = None) -> None:
        if uid is None:
            self._routes.clear()
        else:
            self._routes.pop(uid, None)

    async def _replicas(self, uid: str) -> tuple[list[Replica], itertools.cycle]:
        cached = self._routes.get(uid)
        if cached is None:
            targets = await self._supervisor.route(uid)
            replicas = [Replica(await xo.actor_ref(address=a, uid=u), replica_uid, worker)
                        for a, u, replica_uid, worker in targets]
            cached = (replicas, itertools.cycle(range(len(replicas))))
            self._routes[uid] = cached
        return cached

    async def _call_once_more_if_stale(
            self, uid: str, call: Callable[[Replica], Awaitable[Any]]) -> tuple[Any, Replica]:
        """`call(replica)` on the next replica (round robin), and once more on a fresh route if
        that replica is gone."""
        for attempt in (1, 2):
            replicas, turn = await self._replicas(uid)
            replica = replicas[next(turn) % len(replicas)]
            try:
                return await call(replica), replica
            except _STALE_ROUTE_ERRORS as exc:
                logger.warning("replica of %s unreachable (%s); refreshing route", uid, exc)
                self.invalidate(uid)
                if attempt == 2:
                    raise Unavailable(f"model {uid} is unreachable: {exc}") from None
        raise AssertionError("unreachable")

    async def _grouped_call(self, uid: str, method: str, args: tuple) -> tuple[Any, Replica]:
        """The call, sent together with the others of this turn of the loop (see the top)."""
        loop = asyncio.get_running_loop()
        key = (uid, method)
        group = self._open_groups.get(key)
        if group is None:
            group = self._open_groups[key] = []
            loop.call_soon(self._send_group, key)
        future = loop.create_future()
        group.append((args, future))
        return await future

    def _send_group(self, key: tuple[str, str]) -> None:
        task = asyncio.create_task(self._deliver_group(*key, self._open_groups.pop(key)))
        self._sending.add(task)  # a task nobody holds may be collected before it ends
        task.add_done_callback(self._sending.discard)

    async def _deliver_group(self, uid: str, method: str,
                             group: list[tuple[tuple, asyncio.Future]]) -> None:
        calls = [args for args, _ in group]

        async def send(replica: Replica) -> list[tuple[Exception | None, Any]]:
            channel = await self._channels.for_replica(replica.replica_uid, replica.ref)
            if channel is not None:
                return await channel.call_many(method, calls)
            if len(calls) == 1:
                return [(None, await getattr(replica.ref, method)(*calls[0]))]
            return await replica.ref.call_many(method, calls)

        try:
            outcomes, replica = await self._call_once_more_if_stale(uid, send)
        except asyncio.CancelledError:  # the API is stopping
            for _, future in group:
                future.cancel()
            raise
        except Exception as exc:  # the whole group failed: every caller hears why
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), (error, result) in zip(group, outcomes, strict=True):
            if future.done():  # its caller has gone
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result((result, replica))

    async def _counted_call(self, uid: str, endpoint: str,
                            call: Callable[[], Awaitable[tuple[Any, Replica]]]
                            ) -> tuple[float, Any, Replica]:
        """The call, with the request counted as started, and as failed if it raises."""
        await self._replicas(uid)  # unknown uids fail here, before they make a metric series
        started = self._metrics.request_started(uid, endpoint)
        try:
            result, replica = await call()
        except FleetError as exc:
            self._metrics.request_failed(uid, endpoint, exc.error_type)
            raise
        except asyncio.CancelledError:  # the client left (see fleet.api.fast_routes)
            self._metrics.request_failed(uid, endpoint, "client_disconnected")
            raise
        except Exception:
            self._metrics.request_failed(uid, endpoint, "internal_error")
            raise
        return started, result, replica

    async def open_stream(self, uid: str, endpoint: str, kind: str,
                          body: dict[str, Any]) -> ReplicaStream:
        """Start a streamed answer on the next replica, its tokens pushed over the replica's
        replica channel (or polled when there is none); the stream reports its own metrics."""

        async def start(replica: Replica) -> tuple[dict[str, Any], StreamInbox | None]:
            channel = await self._channels.for_replica(replica.replica_uid, replica.ref)
            if channel is None:
                return await replica.ref.start_stream(kind, body), None
            stream_id = uuid.uuid4().hex
            inbox = channel.watch(stream_id)
            try:
                return await replica.ref.start_stream(kind, body, (channel.token, stream_id)), inbox
            except BaseException:
                inbox.close()
                raise

        started, (opened, inbox), replica = await self._counted_call(
            uid, endpoint, lambda: self._call_once_more_if_stale(uid, start))
        return ReplicaStream(uid, endpoint, replica, opened["stream_id"], opened["prompt_tokens"],
                             started, self._metrics, inbox)

    async def call(self, uid: str, endpoint: str, method: str, *args: Any,
                   tokens: Callable[[Any], tuple[int, int]] = lambda _: (0, 0),
                   grouped: bool = False) -> Any:
        """Call `method` on the next replica (round robin), counted in the model's metrics.
        `tokens(result)` gives (prompt, generated) token counts for the metrics; `grouped`
        lets the call share its actor message with others (see the top; the replica must accept
        `method` in `call_many`)."""
        if grouped:
            call = lambda: self._grouped_call(uid, method, args)  # noqa: E731
        else:
            call = lambda: self._call_once_more_if_stale(  # noqa: E731
                uid, lambda r: getattr(r.ref, method)(*args))
        started, result, replica = await self._counted_call(uid, endpoint, call)
        prompt, generated = tokens(result)
        self._metrics.request_finished(uid, endpoint, started, replica.replica_uid,
                                       replica.worker, prompt, generated)
        return result
