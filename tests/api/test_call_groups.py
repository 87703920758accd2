"""Requests that reach the API together share one actor message to the replica, each still gets
its own answer or its own error, and a lone request goes on its own. Real xoscar actors: the
replica here is a small actor with ModelActor's `call_many`, so the messages are real. Without a
replica channel (CountingReplica has none) groups are actor messages; with one, they travel on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import xoscar as xo

from fleet.api.metrics import FleetMetrics
from fleet.api.routing import ReplicaRouter
from fleet.channel.replica_end import ReplicaChannelServer
from fleet.cluster.replica.model_actor import ModelActor
from fleet.errors import BadRequest


class CountingReplica(xo.StatelessActor):
    """Counts the messages it receives; `embed` doubles numbers and refuses negative ones."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    async def embed(self, value: int) -> int:
        self.messages.append("embed")
        return await self._double(value)

    async def _double(self, value: int) -> int:
        await asyncio.sleep(0.01)
        if value < 0:
            raise BadRequest(f"{value} is negative", code="negative")
        if value == 13:
            raise KeyError("an engine's own exception")
        return value * 2

    async def call_many(self, method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
        self.messages.append(f"call_many:{len(calls)}")
        return await ModelActor.call_many(_Dispatch(self._double), method, calls)

    def seen(self) -> list[str]:
        return self.messages


class _Dispatch:
    """ModelActor.call_many's `self`: it only looks up the method by name."""

    def __init__(self, embed: Any) -> None:
        self.embed = embed


class ChannelReplica(CountingReplica):
    """CountingReplica with a replica channel, answering groups with the same call_many."""

    async def __post_create__(self) -> None:
        self._channel = ReplicaChannelServer(lambda token: None, self._on_channel)
        await self._channel.start("127.0.0.1")

    async def __pre_destroy__(self) -> None:
        self._channel.close()

    def channel_address(self) -> str:
        self.messages.append("channel_address")
        return self._channel.address

    async def _on_channel(self, method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
        self.messages.append(f"channel:{len(calls)}")
        return await ModelActor.call_many(_Dispatch(self._double), method, calls)


class OneReplicaSupervisor:
    def __init__(self, address: str) -> None:
        self._address = address

    async def route(self, uid: str) -> list[tuple[str, str, str, str]]:
        return [(self._address, "replica", f"{uid}-0", "worker-a")]

    async def aliases(self) -> dict[str, str]:
        return {}


@pytest.fixture
def pool_address(monkeypatch: pytest.MonkeyPatch):
    # The replica's channel server and the router's channels find the cluster secret here, as
    # a cluster's processes do (fleet.cluster_secret.install).
    monkeypatch.setenv("FLEET_CLUSTER_SECRET", "a-test-cluster-secret-0123456789")
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(xo.create_actor_pool("127.0.0.1", n_process=0))
    yield loop, pool.external_address
    loop.run_until_complete(pool.stop())
    # As asyncio.run ends: tasks still open (a replica channel's connections) end before the loop.
    leftover = asyncio.all_tasks(loop)
    for task in leftover:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
    loop.close()


def test_requests_of_one_turn_share_a_message_and_keep_their_own_outcomes(pool_address):
    loop, address = pool_address

    async def scenario() -> tuple[list[Any], list[str]]:
        replica = await xo.create_actor(CountingReplica, address=address, uid="replica")
        router = ReplicaRouter(OneReplicaSupervisor(address), FleetMetrics())
        values = [1, 2, -3, 4, 13, 5]
        outcomes = await asyncio.gather(
            *(router.call("m", "embeddings", "embed", v, grouped=True) for v in values),
            return_exceptions=True)
        return outcomes, await replica.seen()

    outcomes, messages = loop.run_until_complete(scenario())
    assert messages == ["call_many:6"]
    assert [outcomes[i] for i in (0, 1, 3, 5)] == [2, 4, 8, 10]
    assert isinstance(outcomes[2], BadRequest) and outcomes[2].code == "negative"
    # An engine's own exception comes back as an internal error that names it.
    assert outcomes[4].status_code == 500 and "KeyError" in outcomes[4].message


def test_a_lone_request_is_sent_as_itself_and_later_turns_make_new_groups(pool_address):
    loop, address = pool_address

    async def scenario() -> tuple[list[int], list[str]]:
        replica = await xo.create_actor(CountingReplica, address=address, uid="replica")
        router = ReplicaRouter(OneReplicaSupervisor(address), FleetMetrics())
        first = await router.call("m", "embeddings", "embed", 7, grouped=True)
        pair = await asyncio.gather(router.call("m", "embeddings", "embed", 1, grouped=True),
                                    router.call("m", "embeddings", "embed", 2, grouped=True))
        return [first, *pair], await replica.seen()

    results, messages = loop.run_until_complete(scenario())
    assert results == [14, 2, 4]
    assert messages == ["embed", "call_many:2"]


def test_groups_travel_on_the_replica_channel_where_there_is_one(pool_address):
    loop, address = pool_address

    async def scenario() -> tuple[list[Any], list[Any], list[str]]:
        replica = await xo.create_actor(ChannelReplica, address=address, uid="replica")
        router = ReplicaRouter(OneReplicaSupervisor(address), FleetMetrics())
        values = [1, 2, -3, 4, 13, 5]
        first = await asyncio.gather(
            *(router.call("m", "embeddings", "embed", v, grouped=True) for v in values),
            return_exceptions=True)
        lone = [await router.call("m", "embeddings", "embed", 7, grouped=True)]
        return first, lone, await replica.seen()

    first, lone, messages = loop.run_until_complete(scenario())
    # One actor call to learn the address; then every group, a lone request too, on the channel.
    assert messages == ["channel_address", "channel:6", "channel:1"]
    assert [first[i] for i in (0, 1, 3, 5)] == [2, 4, 8, 10] and lone == [14]
    assert isinstance(first[2], BadRequest) and first[2].code == "negative"
    assert first[4].status_code == 500 and "KeyError" in first[4].message


def test_only_batched_kinds_of_request_may_be_grouped():
    with pytest.raises(BadRequest, match="cannot be grouped"):
        asyncio.run(ModelActor.call_many(_Dispatch(None), "generate", [()]))
