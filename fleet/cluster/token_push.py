"""Streamed tokens pushed from a replica to the API over a plain socket, one per API process.

Why not actor calls: a stream read through xoscar costs a round trip per poll (the API asks,
the replica answers), and each message is pickled, framed, checked against the cluster's auth
key and dispatched to an actor, in both processes. With llama.cpp on two cores (a token every
~8 ms, both cores busy decoding) that was most of the API's 0.4 ms of CPU per token, taken from
the engine. Here a token is one `write` in the replica and one `read` in the API.

Protocol: frames of a 4-byte big-endian length and an orjson body. The API connects, sends
`{"channel": token}` (a random secret) and waits for `{"ready": true}`; from then on the replica
sends `{"stream": id, "chunks": [...], "done": bool, "usage" or "error" at the end}` frames for
the streams started with that token (`LLMService.start`), each from the engine thread that made
it. A closed connection cancels its streams: nobody is left to read them. Streams are still
started and cancelled by actor calls; only tokens travel here."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import orjson

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
HELLO_TIMEOUT_S = 10.0
# An API that reads nothing for this long is taken as gone (its streams are cancelled).
SEND_TIMEOUT_S = 10.0


def encode_frame(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    return _HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
    return orjson.loads(await reader.readexactly(size))


class FrameSplitter:
    """Bytes as they arrive -> the whole frames among them."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        frames = []
        start = 0
        while len(self._buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer, start)
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
            end = start + _HEADER.size + size
            if end > len(self._buffer):
                break
            frames.append(orjson.loads(self._buffer[start + _HEADER.size:end]))
            start = end
        del self._buffer[:start]
        return frames


class _Connection:
    """One API's connection, written from any thread: the token is sent by the engine's thread
    that made it, without waking the replica's event loop (a third of the replica's CPU per
    token went to that hand-off). The event loop only reads it, to notice the API leaving.

    The writes go to a duplicate of the socket's descriptor, in blocking mode with a time limit:
    asyncio's transport for it is never written to, so the two cannot interleave bytes."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._sock.settimeout(SEND_TIMEOUT_S)
        self._lock = threading.Lock()
        self.open = True

    def send(self, data: bytes) -> bool:
        """False if the connection is (or just became) unusable."""
        with self._lock:
            if not self.open:
                return False
            try:
                self._sock.sendall(data)
                return True
            except OSError:  # the API left, or has read nothing for SEND_TIMEOUT_S
                self._close()
                return False

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self.open:
            self.open = False
            self._sock.close()


class TokenPushServer:
    """In the replica's process: accepts the API's connections and sends frames on them.
    `on_channel_lost(token)` is called on the event loop when a connection closes."""

    def __init__(self, on_channel_lost: Callable[[str], None]):
        self._on_channel_lost = on_channel_lost
        self._connections: dict[str, _Connection] = {}
        self._readers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.address = ""

    async def start(self, host: str) -> str:
        """Listen on `host` (the replica's pool host, which the API already reaches)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in self._connections.values():
            connection.close()
        for writer in self._readers.values():
            writer.close()
        self._connections.clear()
        self._readers.clear()

    @property
    def channels(self) -> int:
        """API processes connected now."""
        return len(self._connections)

    def has_channel(self, token: str) -> bool:
        return token in self._connections

    def send(self, token: str, frame: dict[str, Any]) -> bool:
        """Send a frame on the channel now, from any thread; False if the channel is gone (its
        loss is then reported on the event loop)."""
        connection = self._connections.get(token)
        if connection is None:
            return False
        if connection.send(encode_frame(frame)):
            return True
        writer = self._readers.get(token)
        if writer is not None and self._loop is not None:
            # Closing the transport ends the reading task below, which reports the loss.
            self._loop.call_soon_threadsafe(writer.close)
        return False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(read_frame(reader), HELLO_TIMEOUT_S)
            token = str(hello["channel"])
        except Exception as exc:  # not an API speaking this protocol
            logger.warning("token push: refused a connection: %s", exc)
            writer.close()
            return
        transport_socket = writer.get_extra_info("socket")
        connection = _Connection(socket.socket(fileno=os.dup(transport_socket.fileno())))
        self._connections[token], self._readers[token] = connection, writer
        connection.send(encode_frame({"ready": True}))
        try:
            while await reader.read(65536):  # the API sends nothing more; EOF means it left
                pass
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # The replica is stopping. This is the connection's own task, ending here: letting
            # the cancellation out only makes asyncio's stream callback log it as an error.
            pass
        finally:
            connection.close()
            if self._connections.get(token) is connection:
                del self._connections[token]
                self._readers.pop(token, None)
                self._on_channel_lost(token)
            writer.close()
