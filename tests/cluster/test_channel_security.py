"""The replica channel is closed to whoever lacks the cluster secret, at both ends; its answers
are data, never code; and an API that stops reading costs only itself: its bounded queue fills,
it is dropped, and every other connection and the replica's event loop go on undisturbed."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

import msgpack
import numpy as np
import pytest

from fleet.channel import auth as channel_auth
from fleet.channel import codec as channel_codec
from fleet.channel import sender as channel_sender
from fleet.channel.api_end import ReplicaChannel
from fleet.channel.codec import FrameSplitter, encode_frame, encode_packed_frame, read_frame
from fleet.channel.replica_end import ReplicaChannelServer
from fleet.errors import FleetError, TooManyRequests

SECRET = "a-test-cluster-secret-0123456789"
OTHER = "another-cluster-secret-987654321"


async def _echo_calls(method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
    return [(None, len(args[0])) for args in calls]


async def _serve(serve_calls: Any = _echo_calls, secret: str = SECRET,
                 lost: list[str] | None = None) -> tuple[ReplicaChannelServer, str, int]:
    server = ReplicaChannelServer((lost if lost is not None else []).append, serve_calls, secret)
    host, port = (await server.start("127.0.0.1")).split(":")
    return server, host, int(port)


async def _everything_after_the_challenge(host: str, port: int, *frames: bytes) -> bytes:
    """Connect raw, read the challenge, send `frames`, and return every byte that comes back
    before the replica closes the connection."""
    reader, writer = await asyncio.open_connection(host, port)
    assert "challenge" in await read_frame(reader)
    for frame in frames:
        writer.write(frame)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def test_a_client_without_the_secret_gets_nothing_and_is_closed():
    async def scenario() -> None:
        served: list[str] = []

        async def serve_calls(method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
            served.append(method)
            return [(None, 1)] * len(calls)

        server, host, port = await _serve(serve_calls)
        call = encode_frame({"call": 1, "method": "embed", "calls": [[["hi"]]]})
        wrong = encode_frame({"channel": "t", "nonce": "n",
                              "proof": channel_auth.proof(OTHER, "api", "?", "n", "t")})
        for attempt in (call,  # no hello at all
                        wrong + call,  # a hello made with another secret
                        encode_frame({"channel": "t", "nonce": "n"}) + call,  # no proof
                        struct.pack(">I", 1 << 20) + b"x" * 100):  # a huge "hello"
            assert await _everything_after_the_challenge(host, port, attempt) == b""
        assert served == [] and server.channels == 0
        server.close()

    asyncio.run(scenario())


def test_a_hello_replayed_on_another_connection_is_refused():
    """A proof covers the replica's fresh challenge: one overheard is useless elsewhere."""
    async def scenario() -> None:
        server, host, port = await _serve()
        reader, writer = await asyncio.open_connection(host, port)
        nonces = ((await read_frame(reader))["challenge"], "api-nonce")
        hello = encode_frame({"channel": "t", "nonce": nonces[1],
                              "proof": channel_auth.proof(SECRET, "api", *nonces, "t")})
        writer.write(hello)
        assert (await read_frame(reader))["ready"] is True
        writer.close()
        await asyncio.sleep(0.05)  # the first connection ends, freeing its token
        assert await _everything_after_the_challenge(host, port, hello) == b""
        server.close()

    asyncio.run(scenario())


def test_the_api_refuses_a_replica_without_the_secret():
    async def scenario() -> None:
        server, host, port = await _serve(secret=OTHER)
        with pytest.raises(ConnectionError, match="cluster secret"):
            await ReplicaChannel.open(f"{host}:{port}", SECRET)
        server.close()

        # A replica that answers the challenge with a made-up proof, then sends an answer.
        async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(encode_frame({"challenge": "c"}))
            await read_frame(reader)
            writer.write(encode_frame({"ready": True, "proof": "0" * 64}))
            writer.write(encode_packed_frame({"reply": 0, "outcomes": [[None, 1]]}))
            await reader.read()

        fake = await asyncio.start_server(impostor, "127.0.0.1", 0)
        address = f"127.0.0.1:{fake.sockets[0].getsockname()[1]}"
        with pytest.raises(ConnectionError, match="failed the cluster-secret handshake"):
            await ReplicaChannel.open(address, SECRET)
        fake.close()

    asyncio.run(scenario())


def test_answers_are_data_errors_come_from_a_fixed_list_and_arrays_are_numbers():
    wire = encode_packed_frame({"outcomes": [
        (TooManyRequests("queue full", code="busy"), None),
        (KeyError("from an engine"), None),
        (None, (np.arange(6, dtype=np.float32).reshape(2, 3), 5))]})
    (frame,) = FrameSplitter().feed(wire)
    busy, engine, (_, (vectors, tokens)) = frame["outcomes"]
    assert type(busy[0]) is TooManyRequests and busy[0].code == "busy"
    assert busy[0].status_code == 429
    assert type(engine[0]) is FleetError and engine[0].message == "KeyError: 'from an engine'"
    assert vectors.dtype == np.float32 and vectors.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert tokens == 5
    # A class name Fleet does not know is no way to reach any other class: a plain error that
    # keeps its status.
    unknown = msgpack.ExtType(2, msgpack.packb(["os.system", "x", None, 418]))
    (frame,) = FrameSplitter().feed(_packed(msgpack.packb({"e": unknown})))
    assert type(frame["e"]) is FleetError and frame["e"].status_code == 418
    # Object arrays go neither way: their bytes would be pointers.
    with pytest.raises(TypeError, match="object"):
        encode_packed_frame({"a": np.array([object()])})
    object_array = msgpack.ExtType(1, struct.pack("<B3sB1Q", 3, b"|O8", 1, 1) + b"\0" * 8)
    with pytest.raises(ValueError, match="cannot be read"):
        FrameSplitter().feed(_packed(msgpack.packb({"a": object_array})))


def _packed(body: bytes) -> bytes:
    return struct.pack(">I", len(body) | channel_codec.PACKED) + body


async def _stuck_client(host: str, port: int, token: str) -> asyncio.StreamWriter:
    """An API that passes the handshake, then never reads again (a small receive buffer, so the
    replica's socket fills quickly)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    reader, writer = await asyncio.open_connection(sock=sock)
    nonces = ((await read_frame(reader))["challenge"], "n")
    writer.write(encode_frame({"channel": token, "nonce": "n",
                               "proof": channel_auth.proof(SECRET, "api", *nonces, token)}))
    assert (await read_frame(reader))["ready"] is True
    writer.transport.pause_reading()  # from now on nothing is read
    return writer


def test_a_backlog_over_its_limit_drops_that_connection_at_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(channel_sender, "QUEUE_LIMIT_BYTES", 2 * 1024 * 1024)

    async def scenario() -> None:
        lost: list[str] = []
        server, host, port = await _serve(lost=lost)
        stuck = await _stuck_client(host, port, "stuck")
        frame = {"stream": "s", "chunks": ["x" * 100_000], "done": False}
        started = time.perf_counter()
        sent = 0
        while server.send("stuck", frame):
            sent += 1
            assert sent < 1000, "the backlog has no bound"
            await asyncio.sleep(0)  # let the loop try to write, as it would between tokens
        assert time.perf_counter() - started < 2  # the limit, not the stall timeout (10 s)
        assert sent * 100_000 >= 2 * 1024 * 1024
        for _ in range(100):
            if lost:
                break
            await asyncio.sleep(0.01)
        assert lost == ["stuck"] and server.backlog_bytes == 0
        stuck.close()
        server.close()

    asyncio.run(scenario())


def test_an_api_that_never_reads_slows_nobody_else():
    """One connection asks for large answers and never reads them; meanwhile another
    connection's calls are answered at once and the replica's loop never stalls (it blocked for
    up to 10 s in a send before)."""
    async def big_answers(method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
        return [(None, (np.ones((256, 384), dtype=np.float32), 1)) for _ in calls]

    async def scenario() -> None:
        server, host, port = await _serve(big_answers)
        stuck = await _stuck_client(host, port, "stuck")
        call = encode_frame({"call": 0, "method": "embed", "calls": [[["x"]]] * 4})
        stuck.write(call * 40)  # 40 answers of 1.5 MB
        for _ in range(200):
            if server.backlog_bytes > 1024 * 1024:
                break
            await asyncio.sleep(0.01)
        assert server.backlog_bytes > 1024 * 1024  # its answers wait, unread
        channel = await ReplicaChannel.open(f"{host}:{port}", SECRET)
        slowest_call = slowest_tick = 0.0
        for _ in range(20):
            started = time.perf_counter()
            outcomes = await asyncio.wait_for(channel.call_many("embed", [("a",)]), 5)
            slowest_call = max(slowest_call, time.perf_counter() - started)
            assert outcomes[0][1][0].shape == (256, 384)
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            slowest_tick = max(slowest_tick, time.perf_counter() - started - 0.005)
        assert slowest_call < 0.5 and slowest_tick < 0.2
        assert server.channels == 2  # the stuck one is still waited for (until its limits)
        channel.close()
        stuck.close()
        server.close()

    asyncio.run(scenario())


def test_an_error_is_rebuilt_as_fleets_class_after_xoscar_has_wrapped_one_of_it():
    from xoscar.utils import wrap_exception

    from fleet.errors import BadRequest

    # What xoscar does to an actor's error on its way out: a subclass with BadRequest's name
    # and module that answers every attribute from the error it wrapped first.
    wrapped = wrap_exception(BadRequest("model uid 'served' is already in use"),
                             message="[address=x] already in use")
    assert isinstance(wrapped, BadRequest) and type(wrapped) is not BadRequest
    wire = encode_packed_frame({"e": BadRequest("token ids must be in [0, 10)", code="ids")})
    (frame,) = FrameSplitter().feed(wire)
    assert type(frame["e"]) is BadRequest
    assert (frame["e"].message, frame["e"].code) == ("token ids must be in [0, 10)", "ids")
