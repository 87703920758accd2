"""A replica's channel to each API process: a plain socket beside xoscar's, for the two kinds of
traffic whose per-message cost the engine feels. Streamed tokens are pushed on it as they are
made, and the API's grouped embeddings and rerank calls are answered on it. Everything else
(launching, status, starting and cancelling streams) stays on actor calls.

Why not actor calls for tokens: a stream read through xoscar costs a round trip per poll (the
API asks, the replica answers), and each message is pickled, framed, checked against the cluster's auth
key and dispatched to an actor, in both processes. On a small machine that was most of the API's
CPU per token, taken from the engine (figures: docs/architecture.md, docs/benchmarks.md). Here a
token is one `write` in the replica and one `read` in the API.

Protocol (frames and their bodies: fleet.channel.codec). The API connects; the two ends
prove to each other that they know the cluster secret (fleet.channel.auth) and agree on
a token, a random name for the channel. From then on the replica sends `{"stream": id,
"chunks": [...], "done": bool, "usage" or "error" at the end}` frames for the streams started
with that token (`LLMService.start`), each from the engine thread that made it. A closed
connection cancels its streams: nobody is left to read them. Streams are still started and
cancelled by actor calls; only tokens travel here.

Grouped calls (fleet.api.routing): the API sends `{"call": id, "method": "embed" or "rerank",
"calls": [[args...], ...]}` and the replica answers `{"reply": id, "outcomes": [(error, result),
...]}` (ModelActor.call_many). Under a burst of embeddings the engine waits, between two batches,
for the answers to reach the API and the next requests to come back; through xoscar the two
messages took a third of that wait (docs/benchmarks.md). Calls from the API are JSON;
answers are msgpack, with float32 arrays as raw bytes: no pickle crosses the channel either way.

Sends never block the thread that makes them (fleet.channel.sender): an API that stops
reading fills its own bounded queue and is then dropped, and nobody else waits for it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from fleet import cluster_secret
from fleet.channel import auth as channel_auth
from fleet.channel.codec import (
    encode_frame,
    encode_packed_frame,
    encode_stream_frame,
    read_frame,
)
from fleet.channel.sender import ChannelSender
from fleet.errors import FleetError
from fleet.messages import StreamFrame

logger = logging.getLogger(__name__)

# The port a replica's channel listens on when its worker fixes one (--replica-ports,
# fleet.cluster.worker.replica_ports); unset: a free port the OS picks.
CHANNEL_PORT_ENV = "FLEET_CHANNEL_PORT"

HELLO_TIMEOUT_S = 10.0
# A hello is a token, a nonce and a proof: anything larger is not an API speaking this protocol,
# and nothing larger is read from a peer that has not proved itself yet.
HELLO_MAX_BYTES = 4096


ServeCalls = Callable[[str, list[tuple]], Awaitable[list[tuple[Any, Any]]]]


class ReplicaChannelServer:
    """In the replica's process: accepts the API's connections, sends frames on them, and
    answers the grouped calls they bring with `serve_calls(method, calls) -> outcomes`.
    `on_channel_lost(token)` is called on the event loop when a connection closes.

    `secret`: the cluster secret, by default the one this process inherited
    (fleet.cluster_secret.install); without one the server does not listen at all, and the API
    uses xoscar for this replica."""

    def __init__(self, on_channel_lost: Callable[[str], None], serve_calls: ServeCalls,
                 secret: str | None = None):
        self._on_channel_lost = on_channel_lost
        self._serve_calls = serve_calls
        self._secret = secret or cluster_secret.from_environment()
        self._answering: set[asyncio.Task[None]] = set()
        self._reading: set[asyncio.Task[Any]] = set()  # one per connection (its _accept)
        self._connections: dict[str, ChannelSender] = {}
        self._readers: dict[str, asyncio.StreamWriter] = {}
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.address = ""

    async def start(self, host: str, port: int = 0) -> str:
        """Listen on `host` (the replica's pool host, which the API already reaches) at `port`
        (0: a free one); "" when there is no cluster secret to check peers with."""
        if not self._secret:
            logger.warning("replica channel: no cluster secret in this process; not listening")
            return ""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(self._accept, host, port)
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

    @property
    def backlog_bytes(self) -> int:
        """Bytes waiting for slow API readers, over every connection."""
        return sum(connection.backlog_bytes for connection in list(self._connections.values()))

    def has_channel(self, token: str) -> bool:
        return token in self._connections

    def send(self, token: str, frame: StreamFrame) -> bool:
        """Send a stream's frame on the channel now, from any thread, without waiting; False if
        the channel is gone (its loss is then reported on the event loop)."""
        connection = self._connections.get(token)
        return connection is not None and connection.send(encode_stream_frame(frame))

    async def _handshake(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> tuple[str, str, str] | None:
        """(replica nonce, API nonce, token) once the API has proved it knows the secret; None
        (and a warning) if it has not."""
        assert self._secret is not None
        peer = writer.get_extra_info("peername")
        nonce = channel_auth.new_nonce()
        writer.write(encode_frame({"challenge": nonce}))
        try:
            hello = await asyncio.wait_for(read_frame(reader, HELLO_MAX_BYTES), HELLO_TIMEOUT_S)
            token, api_nonce = str(hello["channel"]), str(hello["nonce"])
            proof = hello["proof"]
        except Exception as exc:  # not an API speaking this protocol
            logger.warning("replica channel: refused a connection from %s: %s", peer, exc)
            return None
        if not channel_auth.check(self._secret, "api", nonce, api_nonce, token, proof):
            logger.warning("replica channel: refused a connection from %s: it does not know "
                           "the cluster secret", peer)
            return None
        if token in self._connections:
            logger.warning("replica channel: refused a second connection for one token")
            return None
        return nonce, api_nonce, token

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reading = asyncio.current_task()
        if reading is not None:
            self._reading.add(reading)
            reading.add_done_callback(self._reading.discard)
        try:
            agreed = await self._handshake(reader, writer)
        except asyncio.CancelledError:  # the replica is stopping
            agreed = None
        if agreed is None:
            writer.close()
            return
        await self._serve_connection(agreed, reader, writer)

    async def _serve_connection(self, agreed: tuple[str, str, str],
                                reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        assert self._loop is not None and self._secret is not None
        token = agreed[2]
        # The API answered the challenge, so the challenge has left asyncio's write buffer:
        # from here on only the sender writes.
        transport_socket = writer.get_extra_info("socket")
        connection = ChannelSender(socket.socket(fileno=os.dup(transport_socket.fileno())),
                                   self._loop, writer.close)
        self._connections[token], self._readers[token] = connection, writer
        proof = channel_auth.proof(self._secret, "replica", *agreed)
        connection.send(encode_frame({"ready": True, "proof": proof}))
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

    async def _answer(self, connection: ChannelSender, frame: dict[str, Any]) -> None:
        try:
            calls = [tuple(args) for args in frame["calls"]]
            outcomes = await self._serve_calls(str(frame["method"]), calls)
            reply = encode_packed_frame({"reply": frame["call"], "outcomes": outcomes})
        except Exception as exc:  # a malformed call: every request in it hears why
            logger.warning("replica channel: a call failed as a whole: %r", exc)
            error = FleetError(f"{type(exc).__name__}: {exc}")
            reply = encode_packed_frame({"reply": frame.get("call"),
                                         "outcomes": [(error, None)] * len(frame["calls"])})
        # Never waits: a slow API's answers queue up to a bound, then its connection is dropped.
        connection.send(reply)
