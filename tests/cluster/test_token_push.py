"""Token channels: frames cut right however the bytes arrive, each stream's frames reach its own
inbox over a real socket, and either end going away is noticed by the other (streams fail with a
reason in the API; the replica cancels the streams of a channel that closed)."""

from __future__ import annotations

import asyncio
import random

import pytest

from fleet.api.token_channels import TokenChannel, TokenChannels
from fleet.cluster.token_push import FrameSplitter, TokenPushServer, encode_frame
from fleet.errors import Unavailable


def test_frames_are_cut_right_whatever_the_pieces():
    frames = [{"stream": f"s{i}", "chunks": [{"text": "é" * i}], "done": i % 3 == 0}
              for i in range(40)]
    wire = b"".join(encode_frame(f) for f in frames)
    rng = random.Random(7)
    for _ in range(20):
        splitter, got, at = FrameSplitter(), [], 0
        while at < len(wire):
            step = rng.randint(1, 60)
            got += splitter.feed(wire[at:at + step])
            at += step
        assert got == frames


def test_an_oversized_frame_is_refused():
    with pytest.raises(ValueError, match="larger than"):
        FrameSplitter().feed(b"\xff\xff\xff\xff")


def test_streams_get_their_own_frames_and_a_lost_channel_is_noticed_at_both_ends():
    async def scenario() -> None:
        lost: list[str] = []
        server = TokenPushServer(lost.append)
        address = await server.start("127.0.0.1")
        channel = await TokenChannel.open(address)
        assert server.has_channel(channel.token)
        first, second = channel.watch("a"), channel.watch("b")
        # Frames pushed in one turn leave together; each reaches its own stream.
        assert server.push(channel.token, {"stream": "a", "chunks": [1], "done": False})
        assert server.push(channel.token, {"stream": "b", "chunks": [2], "done": False})
        assert server.push(channel.token, {"stream": "a", "chunks": [3], "done": True,
                                           "usage": {"completion_tokens": 2}})
        assert await first.next() == {"chunks": [1, 3], "done": True,
                                      "usage": {"completion_tokens": 2}}
        assert await second.next() == {"chunks": [2], "done": False}
        assert not server.push("unknown-channel", {"stream": "a", "chunks": [], "done": True})
        # The replica goes away: the stream still open fails with the reason.
        server.close()
        with pytest.raises(Unavailable, match="closed its token channel"):
            await asyncio.wait_for(second.next(), 5)
        assert channel.closed
        with pytest.raises(Unavailable):
            channel.watch("c")

    asyncio.run(scenario())


def test_the_replica_hears_when_the_api_closes_its_channel():
    async def scenario() -> None:
        lost: list[str] = []
        server = TokenPushServer(lost.append)
        channel = await TokenChannel.open(await server.start("127.0.0.1"))
        channel.close()
        for _ in range(100):
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost == [channel.token]
        assert not server.has_channel(channel.token)
        server.close()

    asyncio.run(scenario())


def test_a_replica_without_a_channel_is_polled_and_asked_again_later():
    class NoChannelReplica:
        asked = 0

        async def token_push_address(self) -> str | None:
            NoChannelReplica.asked += 1
            return None

    async def scenario() -> None:
        channels = TokenChannels()
        assert await channels.for_replica("r-0", NoChannelReplica()) is None
        assert await channels.for_replica("r-0", NoChannelReplica()) is None
        assert NoChannelReplica.asked == 1  # not asked again at once

    asyncio.run(scenario())


def test_a_slow_channel_does_not_hold_up_the_first_stream():
    """The first stream is polled while the connection is still being made; the streams after
    it get the channel once it is open."""
    async def scenario() -> None:
        async def slow_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(4)
            await asyncio.sleep(0.6)
            writer.write(encode_frame({"ready": True}))
            await reader.read()

        server = await asyncio.start_server(slow_greeting, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

        class SlowReplica:
            async def token_push_address(self) -> str:
                return address

        channels = TokenChannels()
        started = asyncio.get_running_loop().time()
        assert await channels.for_replica("r-0", SlowReplica()) is None
        assert asyncio.get_running_loop().time() - started < 0.5
        await asyncio.sleep(0.6)
        channel = await channels.for_replica("r-0", SlowReplica())
        assert channel is not None and not channel.closed
        channel.close()
        server.close()

    asyncio.run(scenario())
