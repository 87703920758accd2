"""The API's end of the replica channels (fleet.channel.replica_end): one connection per replica,
shared by every stream read from it, each stream's frames kept in its own inbox until the route
that writes it to the client asks for them; and the grouped embeddings and rerank calls to that
replica (`ReplicaChannel.call_many`).

If a replica's channel cannot be opened (an older replica, a port the network does not let
through), streams from it are polled over actor calls instead, as they always could be, and its
grouped calls are actor calls; the channel is tried again a minute later.
`FLEET_REPLICA_CHANNELS=0` does the same for every replica, as does an API process without the
cluster secret: a channel opens only once each end has proved it knows the secret
(fleet.channel.auth)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from fleet import cluster_secret
from fleet.channel import auth as channel_auth
from fleet.channel.codec import (
    FrameSplitter,
    decode_stream_frame,
    encode_frame,
    read_stream_frame,
)
from fleet.errors import FleetError, Unavailable
from fleet.messages import JsonObject, StreamFrame, Usage

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
FIRST_STREAM_WAIT_S = 0.25
RETRY_AFTER_S = 60.0


class StreamInbox:
    """Frames of one stream, merged for the reader."""

    def __init__(self, on_close: Callable[[], None] = lambda: None) -> None:
        self._on_close = on_close
        self._chunks: list[JsonObject] = []
        self._done = False
        self._usage: Usage | None = None
        self._error: FleetError | None = None
        self._arrived = asyncio.Event()
        self.lost = False

    def add(self, frame: StreamFrame) -> None:
        self._chunks.extend(frame.chunks)
        if frame.done:
            self._done = True
            self._usage = frame.usage
            if frame.error is not None:
                self._error = frame.error.exception()
        self._arrived.set()

    def close(self) -> None:
        """Its reader has gone: frames still on their way are dropped."""
        self._on_close()

    def fail(self, reason: str) -> None:
        """The channel broke (the replica's process died, say): not an error of the answer."""
        self._done, self._error = True, Unavailable(reason)
        self.lost = True
        self._arrived.set()

    async def next(self, timeout_s: float) -> StreamFrame:
        """Everything that arrived since the last call (waiting for something, TimeoutError
        after `timeout_s`); the answer's error, with the kind the replica gave it, once the
        chunks before it have been read."""
        if not self._chunks and not self._done:
            # A timer rather than asyncio.timeout (Python 3.11) or wait_for (a task per wait).
            self._arrived.clear()
            timer = asyncio.get_running_loop().call_later(timeout_s, self._arrived.set)
            try:
                await self._arrived.wait()
            finally:
                timer.cancel()
            if not self._chunks and not self._done:
                raise TimeoutError(f"no answer in {timeout_s:g} s")
        chunks, self._chunks = self._chunks, []
        if self._done and self._error is not None:
            if chunks:  # what was generated before the failure reaches the client first
                return StreamFrame(chunks=chunks)
            raise self._error
        return StreamFrame(chunks=chunks, done=self._done, usage=self._usage)


class ReplicaChannel(asyncio.Protocol):
    """One open connection to a replica's channel server. A protocol rather than a stream
    reader: frames are cut and handed to their inboxes in the callback that receives the bytes,
    without a coroutine and two waits per frame (a fifth of the API's CPU per token)."""

    def __init__(self, token: str, secret: str) -> None:
        self.token = token
        self._secret = secret
        self._nonces: tuple[str, str] | None = None  # (the replica's, ours) once challenged
        self._frames = FrameSplitter()
        self._inboxes: dict[str, StreamInbox] = {}
        self._calls: dict[int, asyncio.Future[list[tuple[Any, Any]]]] = {}
        self._call_ids = itertools.count()
        self._transport: asyncio.Transport | None = None
        self._greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False

    @classmethod
    async def open(cls, address: str, secret: str) -> ReplicaChannel:
        host, port = address.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        channel = cls(secrets.token_hex(16), secret)
        await asyncio.wait_for(loop.create_connection(lambda: channel, host, int(port)),
                               CONNECT_TIMEOUT_S)
        try:
            await asyncio.wait_for(asyncio.shield(channel._greeted), CONNECT_TIMEOUT_S)
        except BaseException:
            channel.close()
            raise
        return channel

    # ---- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # the replica speaks first

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._frames.feed(data)
        except ValueError as exc:
            self._end(f"the channel to the replica broke: {exc}")
            return
        for frame in frames:
            if self.closed:  # e.g. a failed handshake: nothing after it is read
                return
            if not self._greeted.done():
                self._handshake(frame if isinstance(frame, dict) else {})
                continue
            if isinstance(frame, dict) and "reply" in frame:
                call = self._calls.pop(frame["reply"], None)
                if call is not None and not call.done():
                    call.set_result(frame["outcomes"])
                continue
            try:
                typed = read_stream_frame(frame)
            except ValueError as exc:
                self._end(f"the channel to the replica broke: {exc}")
                return
            inbox = self._inboxes.get(typed.stream)
            if inbox is None:
                continue  # a stream its reader has given up on
            inbox.add(typed)
            if typed.done:
                del self._inboxes[typed.stream]

    def _handshake(self, frame: dict[str, Any]) -> None:
        """The replica's challenge (answered with our proof and our own challenge), then its
        proof; anything else ends the connection before any answer is read."""
        assert self._transport is not None
        if self._nonces is None and isinstance(frame.get("challenge"), str):
            self._nonces = (frame["challenge"], channel_auth.new_nonce())
            proof = channel_auth.proof(self._secret, "api", *self._nonces, self.token)
            self._transport.write(encode_frame({"channel": self.token, "nonce": self._nonces[1],
                                                "proof": proof}))
        elif (self._nonces is not None and frame.get("ready") is True
              and channel_auth.check(self._secret, "replica", *self._nonces, self.token,
                                     frame.get("proof"))):
            self._greeted.set_result(None)
            # From now on every JSON frame is a stream's: read typed, checked as it is read.
            self._frames.read_json = decode_stream_frame
        else:
            self._end("the replica failed the cluster-secret handshake")

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else ""
        if not self._greeted.done():  # a replica closes on an API that fails its check
            reason += " during the handshake (do both ends have the same cluster secret?)"
        self._end(f"the replica closed its channel{reason}")

    # ---- streams ---------------------------------------------------------------------------
    def watch(self, stream_id: str) -> StreamInbox:
        """An inbox for a stream about to start (registered first: its first frame may come
        before the answer to the call that starts it)."""
        if self.closed:
            raise Unavailable("the channel to this replica closed")
        def forget() -> None:
            self._inboxes.pop(stream_id, None)

        inbox = self._inboxes[stream_id] = StreamInbox(forget)
        return inbox

    async def call_many(self, method: str, calls: list[tuple]) -> list[tuple[Any, Any]]:
        """`ModelActor.call_many(method, calls)` over this channel: (error, result) per call.
        Raises ConnectionError if the channel closes first (the caller may try another route)."""
        if self.closed or self._transport is None:
            raise ConnectionError("the channel to this replica closed")
        call_id = next(self._call_ids)
        answer = self._calls[call_id] = asyncio.get_running_loop().create_future()
        try:
            self._transport.write(encode_frame({"call": call_id, "method": method, "calls": calls}))
            return await answer
        finally:
            self._calls.pop(call_id, None)

    def close(self) -> None:
        self._end("the API closed the replica channel")

    def _end(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        if not self._greeted.done():
            self._greeted.set_exception(ConnectionError(reason))
        for inbox in self._inboxes.values():
            inbox.fail(reason)
        self._inboxes.clear()
        for call in self._calls.values():
            if not call.done():
                call.set_exception(ConnectionError(reason))
        self._calls.clear()


class ReplicaChannels:
    """The API's channels, one per replica, opened on first use (unless turned off)."""

    def __init__(self, enabled: bool = True, secret: str | None = None) -> None:
        self._secret = secret or cluster_secret.from_environment()
        if enabled and not self._secret:
            logger.warning("no cluster secret in this process: replica channels are off")
        self._enabled = enabled and bool(self._secret)
        self._open: dict[str, ReplicaChannel] = {}
        self._opening: dict[str, asyncio.Task[ReplicaChannel | None]] = {}
        self._failed_at: dict[str, float] = {}

    async def for_replica(self, replica_uid: str, ref: Any) -> ReplicaChannel | None:
        """The replica's channel, or None: then its streams are polled and its grouped calls
        are actor calls."""
        if not self._enabled:
            return None
        channel = self._open.get(replica_uid)
        if channel is not None and not channel.closed:
            return channel
        if time.monotonic() - self._failed_at.get(replica_uid, -RETRY_AFTER_S) < RETRY_AFTER_S:
            return None
        task = self._opening.get(replica_uid)
        if task is None:  # one connection attempt at a time per replica
            task = self._opening[replica_uid] = asyncio.create_task(self._connect(replica_uid, ref))
            task.add_done_callback(lambda _: self._opening.pop(replica_uid, None))
        # A connection on a working network takes a millisecond; one that hangs (a firewall
        # dropping packets) must not hold the stream up: it is polled, and the connection goes
        # on trying for the streams after it.
        done, _ = await asyncio.wait({task}, timeout=FIRST_STREAM_WAIT_S)
        return task.result() if done else None

    async def _connect(self, replica_uid: str, ref: Any) -> ReplicaChannel | None:
        try:
            address = await ref.channel_address()
            if not address:
                raise ConnectionError("the replica has no replica channel")
            assert self._secret is not None
            channel = await ReplicaChannel.open(address, self._secret)
        except Exception as exc:
            logger.warning("no replica channel to replica %s (%s); its streams are polled",
                           replica_uid, exc)
            self._failed_at[replica_uid] = time.monotonic()
            return None
        # Channels of replicas that have ended are dropped here, as new ones open.
        self._open = {uid: c for uid, c in self._open.items() if not c.closed}
        self._open[replica_uid] = channel
        return channel
