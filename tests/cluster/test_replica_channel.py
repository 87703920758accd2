"""Replica channels: frames cut right however the bytes arrive, each stream's frames reach its own
inbox over a real socket (sent from many threads at once), grouped calls come back each with its
own outcome, and either end going away is noticed by the other (streams and waiting calls fail
with a reason in the API; the replica cancels the streams of a channel that closed). Who may
connect, what answers carry and slow readers: tests/cluster/test_channel_security.py."""

from __future__ import annotations

import asyncio
import pickle
import random
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from fleet.channel import auth as channel_auth
from fleet.channel import codec as channel_codec
from fleet.channel import sender as channel_sender
from fleet.channel.api_end import ReplicaChannel, ReplicaChannels, StreamInbox
from fleet.channel.codec import (
    FrameSplitter,
    decode_stream_frame,
    encode_frame,
    encode_packed_frame,
)
from fleet.channel.replica_end import ReplicaChannelServer
from fleet.errors import BadRequest, Unavailable
from fleet.messages import StreamFrame, Usage

SECRET = "a-test-cluster-secret-0123456789"


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


def test_an_oversized_or_unreadable_frame_is_refused():
    with pytest.raises(ValueError, match="larger than"):
        FrameSplitter().feed(b"\x7f\xff\xff\xff")
    with pytest.raises(ValueError, match="cannot be read"):
        FrameSplitter().feed(struct.pack(">I", 3 | channel_codec.PACKED) + b"\xc1yz")
    with pytest.raises(ValueError, match="cannot be read"):
        FrameSplitter().feed(struct.pack(">I", 3) + b"{x}")
    # Packed and JSON frames side by side, as the replica sends them.
    wire = encode_frame({"a": 1}) + encode_packed_frame({"b": np.ones(2)})
    first, second = FrameSplitter().feed(wire)
    assert first == {"a": 1} and second["b"].tolist() == [1.0, 1.0]


async def _no_calls(method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
    raise AssertionError("no call expected")


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.01)


async def _greeted_connection(host: str, port: str, token: str
                              ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection that has passed the handshake as the API does, and heard the replica's
    ready (with a proof of its own)."""
    reader, writer = await asyncio.open_connection(host, int(port))
    nonces = ((await channel_codec.read_frame(reader))["challenge"], "api-nonce")
    writer.write(encode_frame({"channel": token, "nonce": nonces[1],
                               "proof": channel_auth.proof(SECRET, "api", *nonces, token)}))
    ready = await channel_codec.read_frame(reader)
    assert ready["ready"] is True
    assert channel_auth.check(SECRET, "replica", *nonces, token, ready["proof"])
    return reader, writer


async def _read_until_done(inbox: StreamInbox) -> dict[str, Any]:
    chunks: list[Any] = []
    while True:
        got = await inbox.next(5)
        chunks += got.chunks
        if got.done:
            return {"chunks": chunks, "done": True, "usage": got.usage}


def _frame(stream: str, chunks: list[Any], done: bool = False,
           completion_tokens: int | None = None) -> StreamFrame:
    usage = None if completion_tokens is None else Usage.of(0, completion_tokens)
    return StreamFrame(stream=stream, chunks=[{"piece": c} for c in chunks], done=done,
                       usage=usage)


def test_streams_sent_from_many_threads_reach_their_own_inbox_in_order():
    """Engine threads send their streams' frames at the same time; every stream gets its own
    frames, whole and in the order they were sent, and nothing else."""
    async def scenario() -> None:
        server = ReplicaChannelServer(lambda token: None, _no_calls, SECRET)
        channel = await ReplicaChannel.open(await server.start("127.0.0.1"), SECRET)
        assert server.has_channel(channel.token)
        names = [f"s{i}" for i in range(6)]
        inboxes = {name: channel.watch(name) for name in names}

        def send_stream(name: str) -> None:
            for i in range(300):
                assert server.send(channel.token, _frame(name, [f"{name}-{i}"]))
            assert server.send(channel.token, _frame(name, [], True, 300))

        sending = [asyncio.to_thread(send_stream, name) for name in names]
        got = await asyncio.gather(*(_read_until_done(inboxes[n]) for n in names), *sending)
        for name, result in zip(names, got[:len(names)], strict=True):
            assert result == {"chunks": [{"piece": f"{name}-{i}"} for i in range(300)],
                              "done": True, "usage": Usage.of(0, 300)}
        assert not server.send("unknown-channel", _frame("a", [], True))
        channel.close()
        server.close()

    asyncio.run(scenario())


def test_a_lost_channel_is_noticed_at_both_ends():
    async def scenario() -> None:
        lost: list[str] = []
        server = ReplicaChannelServer(lost.append, _no_calls, SECRET)
        channel = await ReplicaChannel.open(await server.start("127.0.0.1"), SECRET)
        first, second = channel.watch("a"), channel.watch("b")
        assert server.send(channel.token, _frame("a", [1], True, 1))
        assert server.send(channel.token, _frame("b", [2]))
        assert await _read_until_done(first) == {"chunks": [{"piece": 1}], "done": True,
                                                 "usage": Usage.of(0, 1)}
        assert await second.next(5) == StreamFrame(chunks=[{"piece": 2}])
        # The replica goes away: the stream still open fails with the reason.
        server.close()
        with pytest.raises(Unavailable, match="closed its channel"):
            await second.next(5)
        assert channel.closed
        with pytest.raises(Unavailable):
            channel.watch("c")

    asyncio.run(scenario())


def test_the_replica_hears_when_the_api_closes_its_channel():
    async def scenario() -> None:
        lost: list[str] = []
        server = ReplicaChannelServer(lost.append, _no_calls, SECRET)
        channel = await ReplicaChannel.open(await server.start("127.0.0.1"), SECRET)
        channel.close()
        await _until(lambda: bool(lost))
        assert lost == [channel.token]
        assert not server.has_channel(channel.token)
        server.close()

    asyncio.run(scenario())


def test_an_api_that_stops_reading_loses_its_channel(monkeypatch: pytest.MonkeyPatch):
    """A send never blocks an engine thread: frames for an API that reads nothing queue up, and
    once it has taken nothing for STALL_TIMEOUT_S it is taken as gone, and its channel's loss is
    reported like a close."""
    monkeypatch.setattr(channel_sender, "STALL_TIMEOUT_S", 0.3)

    async def scenario() -> None:
        lost: list[str] = []
        server = ReplicaChannelServer(lost.append, _no_calls, SECRET)
        host, port = (await server.start("127.0.0.1")).split(":")
        reader, writer = await _greeted_connection(host, port, "stuck-api")  # never reads again
        small = _frame("a", ["x" * 1000])

        def send_until_refused() -> tuple[int, float]:
            slowest = 0.0
            for sent in range(100_000):
                started = time.perf_counter()
                accepted = server.send("stuck-api", small)
                slowest = max(slowest, time.perf_counter() - started)
                if not accepted:
                    return sent, slowest
                time.sleep(0.0001)
            raise AssertionError("100 MB sent to an API that reads nothing")

        sent, slowest = await asyncio.to_thread(send_until_refused)
        assert sent > 0 and slowest < 0.05  # queued, never waited for
        await _until(lambda: bool(lost))
        assert lost == ["stuck-api"]
        assert not server.has_channel("stuck-api")
        writer.close()
        server.close()

    asyncio.run(scenario())


def test_grouped_calls_are_answered_each_with_its_own_outcome():
    """Calls go out as JSON and come back as msgpack: float32 arrays arrive as they were, an error
    stays the error it was, and answers find their callers whatever order they come in."""
    async def serve_calls(method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
        if method == "boom":
            raise RuntimeError("the whole group failed")
        await asyncio.sleep(0.05 if calls[0][0] == "slow" else 0)
        return [(BadRequest("empty input", code="empty_input"), None) if not text
                else (None, (np.full((1, 3), len(text), dtype=np.float32), len(text)))
                for text, in calls]

    async def scenario() -> None:
        server = ReplicaChannelServer(lambda token: None, serve_calls, SECRET)
        channel = await ReplicaChannel.open(await server.start("127.0.0.1"), SECRET)
        slow, fast = await asyncio.gather(channel.call_many("embed", [("slow",), ("",)]),
                                          channel.call_many("embed", [("ab",)]))
        assert fast[0][0] is None and fast[0][1][1] == 2
        assert fast[0][1][0].dtype == np.float32 and fast[0][1][0].tolist() == [[2.0, 2.0, 2.0]]
        assert slow[0][1][1] == 4
        error = slow[1][0]
        assert isinstance(error, BadRequest) and error.code == "empty_input" and slow[1][1] is None
        failed = await channel.call_many("boom", [("a",), ("b",)])
        assert [str(e) for e, _ in failed] == ["RuntimeError: the whole group failed"] * 2
        # A call still waiting when the replica goes away fails with a ConnectionError, which
        # the router takes as "try a fresh route".
        waiting = asyncio.create_task(channel.call_many("embed", [("slow",)]))
        await asyncio.sleep(0.01)
        server.close()
        with pytest.raises(ConnectionError, match="closed its channel"):
            await asyncio.wait_for(waiting, 5)
        with pytest.raises(ConnectionError):
            await channel.call_many("embed", [("a",)])

    asyncio.run(scenario())


def test_the_replica_closes_a_connection_that_sends_what_is_not_a_call():
    async def scenario() -> None:
        lost: list[str] = []
        server = ReplicaChannelServer(lost.append, _no_calls, SECRET)
        host, port = (await server.start("127.0.0.1")).split(":")
        for garbage in (encode_frame({"stream": "x"}),  # JSON, but not a call
                        # A pickle, flagged as a packed body: the replica reads only JSON.
                        _flagged(pickle.dumps({"call": 1, "calls": []}))):
            reader, writer = await _greeted_connection(host, port, "odd-api")
            writer.write(garbage)
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the replica
            writer.close()
        assert lost == ["odd-api", "odd-api"]
        server.close()

    asyncio.run(scenario())


def _flagged(body: bytes) -> bytes:
    return struct.pack(">I", len(body) | channel_codec.PACKED) + body


def test_a_replica_without_a_channel_is_polled_and_asked_again_later():
    class NoChannelReplica:
        asked = 0

        async def channel_address(self) -> str | None:
            NoChannelReplica.asked += 1
            return None

    async def scenario() -> None:
        channels = ReplicaChannels(secret=SECRET)
        assert await channels.for_replica("r-0", NoChannelReplica()) is None
        assert await channels.for_replica("r-0", NoChannelReplica()) is None
        assert NoChannelReplica.asked == 1  # not asked again at once

    asyncio.run(scenario())


def test_a_slow_channel_does_not_hold_up_the_first_stream():
    """The first stream is polled while the connection is still being made; the streams after
    it get the channel once it is open."""
    async def scenario() -> None:
        async def slow_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(encode_frame({"challenge": "replica-nonce"}))
            hello = await channel_codec.read_frame(reader)
            await asyncio.sleep(0.6)
            nonces = ("replica-nonce", hello["nonce"])
            proof = channel_auth.proof(SECRET, "replica", *nonces, hello["channel"])
            writer.write(encode_frame({"ready": True, "proof": proof}))
            await reader.read()

        server = await asyncio.start_server(slow_greeting, "127.0.0.1", 0)
        address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

        class SlowReplica:
            async def channel_address(self) -> str:
                return address

        channels = ReplicaChannels(secret=SECRET)
        started = asyncio.get_running_loop().time()
        assert await channels.for_replica("r-0", SlowReplica()) is None
        assert asyncio.get_running_loop().time() - started < 0.5
        await asyncio.sleep(0.6)
        channel = await channels.for_replica("r-0", SlowReplica())
        assert channel is not None and not channel.closed
        channel.close()
        server.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("frame", [
    {"stream": "a", "chunks": "not a list", "done": False},
    {"stream": "a", "chunks": [1, 2], "done": False},  # a chunk is an OpenAI choice object
    {"stream": "a", "chunks": [], "done": True, "usage": {"prompt_tokens": "many"}},
    {"stream": "a", "chunks": [], "done": True, "error": {"kind": "BadRequest"}},
    {"stream": 7, "chunks": [], "done": False},
])
@pytest.mark.parametrize("typed_reader", [False, True])
def test_a_stream_frame_that_does_not_match_its_type_ends_the_channel(frame, typed_reader):
    """What arrives on the channel is checked against StreamFrame as it is read: a frame of the
    wrong shape fails the streams it carried with the reason, instead of a KeyError or a chunk
    of nonsense sent on to a client."""
    async def scenario() -> None:
        channel = ReplicaChannel("token", SECRET)
        channel._greeted.set_result(None)  # past the handshake (tested above)
        if typed_reader:  # as after a real handshake; else frames read as dicts, then checked
            channel._frames.read_json = decode_stream_frame
        inbox = channel.watch("a")
        channel.data_received(encode_frame(frame))
        assert channel.closed
        with pytest.raises(Unavailable, match="does not match its type"):
            await inbox.next(5)

    asyncio.run(scenario())
