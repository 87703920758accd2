"""A replica's channel to each API process: a plain socket beside xoscar's, for the two kinds of
traffic whose per-message cost the engine feels. Streamed tokens are pushed on it as they are
made, and the API's grouped embeddings and rerank calls are answered on it. Everything else
(launching, status, starting and cancelling streams) stays on actor calls.

Why not actor calls for tokens: a stream read through xoscar costs a round trip per poll (the
API asks, the replica answers), and each message is pickled, framed, checked against the cluster's auth
key and dispatched to an actor, in both processes. With llama.cpp on two cores (a token every
~8 ms, both cores busy decoding) that was most of the API's 0.4 ms of CPU per token, taken from
the engine. Here a token is one `write` in the replica and one `read` in the API.

Protocol: frames of a 4-byte big-endian length and an orjson body. The API connects, sends
`{"channel": token}` (a random secret) and waits for `{"ready": true}`; from then on the replica
sends `{"stream": id, "chunks": [...], "done": bool, "usage" or "error" at the end}` frames for
the streams started with that token (`LLMService.start`), each from the engine thread that made
it. A closed connection cancels its streams: nobody is left to read them. Streams are still
started and cancelled by actor calls; only tokens travel here.

Grouped calls (fleet.api.routing): the API sends `{"call": id, "method": "embed" or "rerank",
"calls": [[args...], ...]}` and the replica answers `{"reply": id, "outcomes": [(error, result),
...]}` (ModelActor.call_many). Under a burst of embeddings the engine waits, between two batches,
for the answers to reach the API and the next requests to come back; through xoscar the two
messages took 1.4 of those 4.2 ms (MiniLM, batches of 16 in 30 ms). Calls from the API are JSON
(the replica never unpickles what a connection sends it); answers are pickled, as xoscar would
have sent them, because they hold float32 arrays: the flag `PICKLED` in a frame's length says so,
and the API accepts it only from the replica it connected to."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from fleet.errors import FleetError

logger = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * 1024 * 1024
PICKLED = 1 << 31  # in a frame's length: the body is a pickle, not JSON
HELLO_TIMEOUT_S = 10.0
# An API that reads nothing for this long is taken as gone (its streams are cancelled).
SEND_TIMEOUT_S = 10.0


def encode_frame(payload: dict[str, Any]) -> bytes:
    body = orjson.dumps(payload)
    return _HEADER.pack(len(body)) + body


def encode_pickled_frame(payload: dict[str, Any]) -> bytes:
    body = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body) | PICKLED) + body


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """A JSON frame; a pickled one is refused like an oversized one."""
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
    return orjson.loads(await reader.readexactly(size))


class FrameSplitter:
    """Bytes as they arrive -> the whole frames among them (the API's side: it takes pickled
    frames, from the replica it connected to)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        frames = []
        start = 0
        while len(self._buffer) - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer, start)
            pickled, size = bool(size & PICKLED), size & ~PICKLED
            if size > MAX_FRAME_BYTES:
                raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
            end = start + _HEADER.size + size
            if end > len(self._buffer):
                break
            with memoryview(self._buffer) as view, view[start + _HEADER.size:end] as body:
                try:
                    frames.append(pickle.loads(body) if pickled else orjson.loads(body))
                except Exception as exc:  # the channel cannot go on: its framing is lost
                    raise ValueError(f"a frame that cannot be read: {exc!r}") from exc
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


ServeCalls = Callable[[str, list[tuple]], Awaitable[list[tuple[Any, Any]]]]


class ReplicaChannelServer:
    """In the replica's process: accepts the API's connections, sends frames on them, and
    answers the grouped calls they bring with `serve_calls(method, calls) -> outcomes`.
    `on_channel_lost(token)` is called on the event loop when a connection closes."""

    def __init__(self, on_channel_lost: Callable[[str], None], serve_calls: ServeCalls):
        self._on_channel_lost = on_channel_lost
        self._serve_calls = serve_calls
        self._answering: set[asyncio.Task[None]] = set()
        self._reading: set[asyncio.Task[Any]] = set()  # one per connection (its _accept)
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
        # Ended here rather than left pending: a replica that stops may close its loop next.
        for task in (*self._answering, *self._reading):
            task.cancel()
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
            logger.warning("replica channel: refused a connection: %s", exc)
            writer.close()
            return
        reading = asyncio.current_task()
        if reading is not None:
            self._reading.add(reading)
            reading.add_done_callback(self._reading.discard)
        transport_socket = writer.get_extra_info("socket")
        connection = _Connection(socket.socket(fileno=os.dup(transport_socket.fileno())))
        self._connections[token], self._readers[token] = connection, writer
        connection.send(encode_frame({"ready": True}))
        try:
            while True:  # until the API leaves (EOF)
                frame = await read_frame(reader)
                if not isinstance(frame, dict) or not isinstance(frame.get("calls"), list):
                    raise ValueError("a frame that is not a call")
                task = asyncio.create_task(self._answer(connection, frame))
                self._answering.add(task)  # a task nobody holds may be collected before it ends
                task.add_done_callback(self._answering.discard)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except ValueError as exc:  # a frame too big, or not JSON: not our API
            logger.warning("replica channel: closing a connection that sent %s", exc)
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

    async def _answer(self, connection: _Connection, frame: dict[str, Any]) -> None:
        try:
            calls = [tuple(args) for args in frame["calls"]]
            outcomes = await self._serve_calls(str(frame["method"]), calls)
            reply = encode_pickled_frame({"reply": frame["call"], "outcomes": outcomes})
        except Exception as exc:  # a malformed call: every request in it hears why
            logger.warning("replica channel: a call failed as a whole: %r", exc)
            error = FleetError(f"{type(exc).__name__}: {exc}")
            reply = encode_pickled_frame({"reply": frame.get("call"),
                                          "outcomes": [(error, None)] * len(frame["calls"])})
        # On the event loop, a send that blocks is one to an API that reads nothing, and it ends
        # after SEND_TIMEOUT_S with the channel; the socket's buffer takes a normal answer whole.
        connection.send(reply)
