"""Streamed tokens pushed from a replica to the API over a plain socket, one per API process.

Why not actor calls: a stream read through xoscar costs a round trip per poll (the API asks,
the replica answers), and each message is pickled, framed, checked against the cluster's auth
key and dispatched to an actor, in both processes. With llama.cpp on two cores (a token every
~8 ms, both cores busy decoding) that was most of the API's 0.4 ms of CPU per token, taken from
the engine. Here a token is one `write` in the replica and one `read` in the API.

Protocol: frames of a 4-byte big-endian length and an orjson body. The API connects, sends
`{"channel": token}` (a random secret) and waits for `{"ready": true}`; from then on the replica
writes `{"stream": id, "chunks": [...], "done": bool, "usage" or "error" at the end}` frames for
the streams started with that token (`LLMService.start`). Frames written in one turn of the
replica's event loop leave in one write. A closed connection cancels its streams: nobody is left
to read them. Streams are still started and cancelled by actor calls; only tokens travel here."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import Any

import orjson

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
HELLO_TIMEOUT_S = 10.0


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


class TokenPushServer:
    """In the replica's process: accepts the API's connections and writes frames to them.
    `on_channel_lost(token)` is called when a connection closes."""

    def __init__(self, on_channel_lost: Callable[[str], None]):
        self._on_channel_lost = on_channel_lost
        self._writers: dict[str, asyncio.StreamWriter] = {}
        self._unsent: dict[str, list[bytes]] = {}
        self._server: asyncio.AbstractServer | None = None
        self.address = ""

    async def start(self, host: str) -> str:
        """Listen on `host` (the replica's pool host, which the API already reaches)."""
        self._server = await asyncio.start_server(self._accept, host, 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    @property
    def channels(self) -> int:
        """API processes connected now."""
        return len(self._writers)

    def has_channel(self, token: str) -> bool:
        return token in self._writers

    def push(self, token: str, frame: dict[str, Any]) -> bool:
        """Queue a frame for the channel (sent at the end of this loop turn); False if the
        channel is gone."""
        if token not in self._writers:
            return False
        unsent = self._unsent.get(token)
        if unsent is None:
            unsent = self._unsent[token] = []
            asyncio.get_running_loop().call_soon(self._flush, token)
        unsent.append(encode_frame(frame))
        return True

    def _flush(self, token: str) -> None:
        frames = self._unsent.pop(token, [])
        writer = self._writers.get(token)
        if writer is not None and frames:
            writer.write(b"".join(frames))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = await asyncio.wait_for(read_frame(reader), HELLO_TIMEOUT_S)
            token = str(hello["channel"])
        except Exception as exc:  # not an API speaking this protocol
            logger.warning("token push: refused a connection: %s", exc)
            writer.close()
            return
        self._writers[token] = writer
        writer.write(encode_frame({"ready": True}))
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
            if self._writers.get(token) is writer:
                del self._writers[token]
                self._unsent.pop(token, None)
                self._on_channel_lost(token)
            writer.close()
