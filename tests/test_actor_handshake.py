"""The handshake that opens every actor connection (fleet.actor_handshake), over real sockets:
both sides holding the key get through; another key fails on both sides; what a client sent on
one connection, sent again on another, fails; a connection that does not open with the tag gets
not a byte back."""

from __future__ import annotations

import asyncio

import pytest

from fleet.actor_handshake import (
    MAGIC,
    NONCE_BYTES,
    PROOF_BYTES,
    HandshakeFailed,
    accept_handshake,
    offer_handshake,
)

KEY = b"the-cluster-key"


async def _pool(verdicts: list[bool], key: bytes | None = KEY) -> tuple[asyncio.AbstractServer, int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        verdicts.append(await accept_handshake(reader, writer, key))
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_both_sides_with_the_key_get_through_and_another_key_fails_both():
    async def scenario() -> list[bool]:
        verdicts: list[bool] = []
        server, port = await _pool(verdicts)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await offer_handshake(reader, writer, KEY)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with pytest.raises(HandshakeFailed, match="another key"):
                await offer_handshake(reader, writer, b"another-key")
            writer.close()
            await asyncio.sleep(0.2)
        return verdicts

    assert asyncio.run(scenario()) == [True, False]


def test_a_recorded_client_sent_again_on_another_connection_fails():
    async def scenario() -> tuple[list[bool], bytes]:
        verdicts: list[bool] = []
        server, port = await _pool(verdicts)
        async with server:
            # A real client's bytes, recorded.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            sent: list[bytes] = []
            write = writer.write

            def recording(data: bytes) -> None:
                sent.append(bytes(data))
                write(data)

            writer.write = recording  # type: ignore[method-assign]
            await offer_handshake(reader, writer, KEY)
            writer.close()
            recorded = b"".join(sent)
            assert len(recorded) == len(MAGIC) + NONCE_BYTES + PROOF_BYTES
            # Sent again, byte for byte, on a new connection.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(recorded)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await asyncio.sleep(0.1)
        return verdicts, answer

    verdicts, answer = asyncio.run(scenario())
    assert verdicts == [True, False]
    assert len(answer) == NONCE_BYTES + PROOF_BYTES  # the pool's challenge, then it closed


def test_a_connection_without_the_tag_gets_nothing():
    async def scenario() -> tuple[list[bool], bytes]:
        verdicts: list[bool] = []
        server, port = await _pool(verdicts)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x02" + b"\x00" * 100)  # an xoscar frame's first bytes
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        return verdicts, answer

    verdicts, answer = asyncio.run(scenario())
    assert verdicts == [False] and answer == b""


def test_without_a_key_there_is_no_handshake(monkeypatch):
    monkeypatch.delenv("XOSCAR_AUTH_KEY", raising=False)

    async def scenario() -> list[bool]:
        verdicts: list[bool] = []
        server, port = await _pool(verdicts, key=None)
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await offer_handshake(reader, writer)  # writes nothing
            writer.close()
            await asyncio.sleep(0.1)
        return verdicts

    assert asyncio.run(scenario()) == [True]
