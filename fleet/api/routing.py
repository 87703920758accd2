"""The API's routing table: model uid -> replica actor refs, asked of the supervisor once and
cached, so a request costs one actor call to the replica and nothing to the supervisor.

Small requests that come in bursts (embeddings, rerank) share their calls: those that reach
the API in the same turn of its event loop, for the same model, leave as one message
(`ModelActor.call_many`), and their answers come back as one. Each actor message costs CPU in
both processes (serialising, a socket write and read, an actor dispatch); under load that was a
tenth of the API's CPU per request, taken from the engine on a small machine. A lone request
waits for nothing: its group closes at the end of the turn it arrived in. Groups travel on the
replica's channel where there is one (see fleet.channel.replica_end for why), else as
actor calls.

Faults: the cached routes follow the supervisor's route events (a long poll, see
fleet.cluster.supervisor.route_events), so a replica that stops being ready (its process died, it is
draining) leaves them as soon as the supervisor knows, and a new one joins them; nothing is
asked per request. Before that, a request whose replica turns out to be gone (its connection
broke, the process is not there) is sent once more to another ready replica: every call made
here is safe to repeat (embeddings, rerank, a whole answer, the start of a stream, none of
which has sent anything to the client yet), and the gone replica is avoided for a while.
With no replica left, the answer is a 503 with Retry-After and the reason."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import xoscar as xo
from xoscar.errors import ActorNotExist, ServerClosed

from fleet.api import metering
from fleet.api.keep_alives import KeepAlives
from fleet.api.metrics import FleetMetrics
from fleet.api.streams import Replica, ReplicaStream
from fleet.channel.api_end import ReplicaChannels, StreamInbox
from fleet.cluster.deadlines import DeadlineExceeded, within
from fleet.errors import FleetError, Unavailable
from fleet.messages import GenerationCall, StreamStarted
from fleet.model_aliases import ALIASES_CHANGED
from fleet.settings import (
    control_call_timeout_s,
    replica_channels_enabled,
    request_timeout_s,
    wake_timeout_s,
)

logger = logging.getLogger(__name__)

# Errors that mean "that replica is gone": drop the cached route and ask again.
# (An engine's own OSError must not count: it would be retried and reported as unreachable.)
_STALE_ROUTE_ERRORS = (ActorNotExist, ServerClosed, ConnectionError)
# A replica found gone is avoided this long, or until the supervisor's next word on the model:
# longer than the supervisor takes to notice (fleet.cluster.worker.replica_watch).
SUSPECT_FOR_S = 10.0
_WATCH_TIMEOUT_S = 30.0


class ReplicaRouter:
    def __init__(self, supervisor: Any, metrics: FleetMetrics):
        self._supervisor = supervisor
        self._metrics = metrics
        self._channels = ReplicaChannels(replica_channels_enabled())
        self._routes: dict[str, tuple[list[Replica], itertools.cycle]] = {}
        self._open_groups: dict[tuple[str, str], list[tuple[tuple, asyncio.Future]]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        # Replica processes found gone (key -> until when they are avoided), and why.
        self._suspects: dict[str, tuple[float, str]] = {}
        self._following: asyncio.Task[None] | None = None
        self._waking: dict[str, asyncio.Future[None]] = {}  # loads of idle models asked for
        # Requests' own keep_alive; forgotten with the routes, on the same events.
        self.keep_alives = KeepAlives(supervisor, self.uid_of)
        # alias -> model uid (fleet.model_aliases), asked of the supervisor when first needed
        # and again after the route events say the aliases changed; None: to be asked.
        self._aliases: dict[str, str] | None = None
        # uid -> the model's abilities, asked of the supervisor for a request that needs them
        # (one with images) and forgotten with the model's route.
        self._abilities: dict[str, list[str]] = {}

    def invalidate(self, uid: str | None = None) -> None:
        self.keep_alives.forget(uid)
        if uid is None or uid == ALIASES_CHANGED:
            self._aliases = None
        if uid is None:
            self._routes.clear()
            self._abilities.clear()
        else:
            self._routes.pop(uid, None)
            self._abilities.pop(uid, None)

    async def uid_of(self, name: str) -> str:
        """The uid of the model that `name` names: `name` itself, or the model it is an alias
        of. A uid whose route is cached costs one dict lookup (an alias is never a uid)."""
        if name in self._routes:
            return name
        aliases = self._aliases
        if aliases is None:
            self._follow()
            aliases = self._aliases = await self._supervisor.aliases()
        return aliases.get(name, name)

    async def abilities(self, name: str) -> list[str]:
        """The abilities of the model `name` names (its family's: chat, vision, tools...)."""
        uid = await self.uid_of(name)
        known = self._abilities.get(uid)
        if known is None:
            self._follow()
            described = await self._supervisor.describe_model(uid)
            known = self._abilities[uid] = list(described.get("model_ability") or ())
        return known

    def _follow(self) -> None:
        """Follow the route events, from the first request on."""
        if self._following is None or self._following.done():
            self._following = asyncio.create_task(self._follow_routes())

    async def _replicas(self, uid: str) -> tuple[list[Replica], itertools.cycle]:
        cached = self._routes.get(uid)
        if cached is None:
            self._follow()
            targets = await self._route(uid)
            replicas = [replica for target in targets
                        if (replica := await self._connect(*target)) is not None]
            if not replicas:
                raise self._unreachable(uid, [f"{t[0]}/{t[1]}" for t in targets])
            cached = (replicas, itertools.cycle(range(len(replicas))))
            self._routes[uid] = cached
        return cached

    async def _route(self, uid: str) -> list[tuple[str, str, str, str]]:
        """The supervisor's route to the model's ready replicas; an idle model is loaded first
        (fleet.cluster.supervisor.elastic), the request waiting for it, at most wake_timeout_s."""
        try:
            return await self._supervisor.route(uid)
        except Unavailable as exc:
            if exc.code != "model_idle":
                raise
        waking = self._waking.get(uid)
        if waking is None or waking.done():  # one call to the supervisor per API process
            waking = self._waking[uid] = asyncio.ensure_future(self._supervisor.wake(uid))
        try:
            await within(asyncio.shield(waking), wake_timeout_s(), f"the load of model {uid}")
        except DeadlineExceeded:
            raise Unavailable(f"model {uid} was idle and is still loading after "
                              f"{wake_timeout_s():g} s (FLEET_WAKE_TIMEOUT_S); ask again later",
                              code="model_loading") from None
        return await self._supervisor.route(uid)

    async def _connect(self, address: str, actor_uid: str, replica_uid: str,
                       worker: str) -> Replica | None:
        """A reference to the replica (xoscar checks that it is there), or None if its process
        is gone and the supervisor has not heard yet."""
        key = f"{address}/{actor_uid}"
        try:
            ref = await within(xo.actor_ref(address=address, uid=actor_uid),
                               control_call_timeout_s(), f"replica {replica_uid}")
            return Replica(ref, replica_uid, worker, key)
        except (*_STALE_ROUTE_ERRORS, Unavailable) as exc:  # gone, or hung
            self._suspects[key] = (time.monotonic() + SUSPECT_FOR_S,
                                   f"replica {replica_uid} is unreachable: {exc}")
            return None

    def _unreachable(self, uid: str, keys: list[str]) -> Unavailable:
        """The 503 of a model whose replicas are all gone, with what was seen of each."""
        why = "; ".join(sorted({self._suspects[k][1] for k in keys if k in self._suspects}))
        return Unavailable(f"model {uid} has no reachable replica ({why}); it is being restarted",
                           code="model_restarting")

    async def _follow_routes(self) -> None:
        """Drop the cached routes the supervisor says changed (see the top), for as long as
        the API runs; if the supervisor cannot be asked, drop them all and ask again."""
        epoch, version = "", 0
        while True:
            try:
                now_epoch, version, changed = await within(
                    self._supervisor.watch_routes(epoch, version, _WATCH_TIMEOUT_S),
                    _WATCH_TIMEOUT_S + 10, "the supervisor")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("route events: %r; asking again", exc)
                self.invalidate()
                epoch, version = "", 0
                await asyncio.sleep(1.0)
                continue
            if changed is None or now_epoch != epoch:
                self.invalidate()
            if not now_epoch:  # the supervisor is stopping
                return
            for uid in changed or ():
                self.invalidate(uid)
            epoch = now_epoch

    def _suspect(self, replica: Replica, reason: str) -> None:
        self._suspects[replica.key] = (time.monotonic() + SUSPECT_FOR_S, reason)

    def _usable(self, replica: Replica) -> bool:
        if not self._suspects:
            return True
        until = self._suspects.get(replica.key)
        if until is None:
            return True
        if until[0] < time.monotonic():
            del self._suspects[replica.key]
            return True
        return False

    async def replicas_of(self, uid: str) -> list[Replica]:
        """The model's replicas as the routing table has them, for a question that each one
        must be asked (which of them holds a named request)."""
        replicas, _ = await self._replicas(await self.uid_of(uid))
        return list(replicas)

    async def _next_replica(self, uid: str) -> Replica:
        """The next usable replica (round robin); the route is asked again when the cached one
        has none, and a 503 says why when that has none either."""
        for fresh in (False, True):
            if fresh:
                self.invalidate(uid)
            replicas, turn = await self._replicas(uid)
            for _ in range(len(replicas)):
                replica = replicas[next(turn) % len(replicas)]
                if self._usable(replica):
                    return replica
        raise self._unreachable(uid, [r.key for r in replicas])

    async def _call_once_more_if_stale(
            self, uid: str, call: Callable[[Replica], Awaitable[Any]]) -> tuple[Any, Replica]:
        """`call(replica)` on the next replica, and once more on another if that one is gone
        (see the top)."""
        for attempt in (1, 2):
            replica = await self._next_replica(uid)
            try:
                return await within(call(replica), request_timeout_s(),
                                    f"replica {replica.replica_uid}"), replica
            except _STALE_ROUTE_ERRORS as exc:
                reason = f"replica {replica.replica_uid} is unreachable: {exc}"
                logger.warning("%s; %s", reason,
                               "trying another" if attempt == 1 else "giving up")
                self._suspect(replica, reason)
                if attempt == 2:
                    raise Unavailable(f"model {uid}: {reason}", code="model_restarting") from None
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
            channel = await self._channels.for_replica(replica.key, replica.ref)
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
        metering.reached(uid, endpoint)
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

    async def open_stream(self, uid: str, endpoint: str, call: GenerationCall) -> ReplicaStream:
        """Start a streamed answer on the next replica, its tokens pushed over the replica's
        replica channel (or polled when there is none); the stream reports its own metrics."""
        uid = await self.uid_of(uid)

        async def start(replica: Replica) -> tuple[StreamStarted, StreamInbox | None]:
            channel = await self._channels.for_replica(replica.key, replica.ref)
            if channel is None:
                return await replica.ref.start_stream(call), None
            stream_id = uuid.uuid4().hex
            inbox = channel.watch(stream_id)
            try:
                return await replica.ref.start_stream(call, (channel.token, stream_id)), inbox
            except BaseException:
                inbox.close()
                raise

        started, (opened, inbox), replica = await self._counted_call(
            uid, endpoint, lambda: self._call_once_more_if_stale(uid, start))
        return ReplicaStream(uid, endpoint, replica, opened.stream_id, opened.prompt_tokens,
                             started, self._metrics, inbox)

    async def open_service_stream(self, uid: str, endpoint: str, method: str,
                                  *args: Any) -> tuple[Any, AsyncIterator[Any]]:
        """Start a streamed request of a model type's service (ModelActor.stream_service, an
        actor generator) on the next replica: its first item, which says the replica accepted
        the request (its refusal is raised here, before the API has answered), and the rest.
        The request counts as finished when the rest is spent."""
        uid = await self.uid_of(uid)

        async def start(replica: Replica) -> tuple[Any, Any]:
            items = await replica.ref.stream_service(method, *args)
            return await items.__anext__(), items

        started, (first, items), replica = await self._counted_call(
            uid, endpoint, lambda: self._call_once_more_if_stale(uid, start))

        async def rest() -> AsyncIterator[Any]:
            try:
                async for item in items:
                    yield item
            except BaseException as exc:
                kind = exc.error_type if isinstance(exc, FleetError) else "internal_error"
                self._metrics.request_failed(uid, endpoint, kind)
                raise
            self._metrics.request_finished(uid, endpoint, started, replica.replica_uid,
                                           replica.worker, 0, 0)

        return first, rest()

    async def call(self, uid: str, endpoint: str, method: str, *args: Any,
                   tokens: Callable[[Any], tuple[int, int]] = lambda _: (0, 0),
                   grouped: bool = False) -> Any:
        """Call `method` on the next replica (round robin), counted in the model's metrics.
        `tokens(result)` gives (prompt, generated) token counts for the metrics; `grouped`
        lets the call share its actor message with others (see the top; the replica must accept
        `method` in `call_many`)."""
        uid = await self.uid_of(uid)
        if grouped:
            call = lambda: self._grouped_call(uid, method, args)  # noqa: E731
        else:
            call = lambda: self._call_once_more_if_stale(  # noqa: E731
                uid, lambda r: getattr(r.ref, method)(*args))
        started, result, replica = await self._counted_call(uid, endpoint, call)
        prompt, generated = tokens(result)
        metering.used_tokens(prompt, generated)
        self._metrics.request_finished(uid, endpoint, started, replica.replica_uid,
                                       replica.worker, prompt, generated)
        return result
