"""Every connection to a cluster's actor pools opens with a handshake, so that a recorded frame
cannot be sent again.

xoscar signs each frame with the cluster's key (fleet.cluster_secret) and checks it before it
unpickles a byte, but nothing fresh is signed: a frame recorded on the network (a
`terminate_model` call, say) verifies again whenever, and wherever, it is sent, by someone who
never held the key. So each TCP or unix-socket connection between pools starts with a challenge
in both directions, before xoscar reads or writes a frame on it:

    client -> pool   MAGIC, client_nonce
    pool -> client   pool_nonce, HMAC(key, "pool" | client_nonce | pool_nonce)
    client -> pool   HMAC(key, "client" | client_nonce | pool_nonce)

The pool's nonce is fresh for every connection, so a recorded client proof fails on any other
connection, and the frames after it travel only on a connection whose client proved it holds
the key now; each proof names its side, so one side's is no use as the other's. A connection
that does not open with MAGIC is closed without a word, and one whose proof fails is closed
before xoscar sees it. The key is xoscar's own (XOSCAR_AUTH_KEY): a process without one (a pool
outside any Fleet cluster) makes and expects no handshake, like xoscar's unsigned frames.

What it does not give: encryption, or protection against someone who can rewrite packets of a
live connection between two hosts; run a cluster across networks you do not trust inside a VPN.

`install()` patches xoscar's socket server and clients (xoscar 0.12, pinned in pyproject.toml):
every process of a cluster calls it before it opens or accepts a connection; replica processes
do it through `fleet.cluster.replica.subpool_setup`, the first module their pool imports."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
from typing import Any

logger = logging.getLogger(__name__)

MAGIC = b"FLEETAH1"
NONCE_BYTES = 32
PROOF_BYTES = hashlib.sha256().digest_size
HANDSHAKE_TIMEOUT_S = 10.0
_ENV_KEY = "XOSCAR_AUTH_KEY"  # xoscar's own (fleet.cluster_secret.install sets it)


class HandshakeFailed(ConnectionError):
    """The pool at the other end did not prove that it holds this cluster's key."""


def _key() -> bytes | None:
    key = os.environ.get(_ENV_KEY)
    return key.encode() if key else None


def _proof(key: bytes, side: bytes, client_nonce: bytes, pool_nonce: bytes) -> bytes:
    return hmac.new(key, b"fleet-actor-handshake|" + side + b"|" + client_nonce + pool_nonce,
                    hashlib.sha256).digest()


async def accept_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           key: bytes | None = None) -> bool:
    """The pool's side: whether the client proved it holds the key (this process's, by default;
    True at once when it has none)."""
    key = key or _key()
    if key is None:
        return True
    try:
        hello = await asyncio.wait_for(reader.readexactly(len(MAGIC) + NONCE_BYTES),
                                       HANDSHAKE_TIMEOUT_S)
        if not hello.startswith(MAGIC):
            return False  # not a cluster member's connection: nothing is said to it
        client_nonce, pool_nonce = hello[len(MAGIC):], secrets.token_bytes(NONCE_BYTES)
        writer.write(pool_nonce + _proof(key, b"pool", client_nonce, pool_nonce))
        await writer.drain()
        given = await asyncio.wait_for(reader.readexactly(PROOF_BYTES), HANDSHAKE_TIMEOUT_S)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
        return False
    return hmac.compare_digest(given, _proof(key, b"client", client_nonce, pool_nonce))


async def offer_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          key: bytes | None = None) -> None:
    """The client's side, on a connection just opened (this process's key by default); raises
    HandshakeFailed."""
    key = key or _key()
    if key is None:
        return
    client_nonce = secrets.token_bytes(NONCE_BYTES)
    writer.write(MAGIC + client_nonce)
    try:
        await writer.drain()
        answer = await asyncio.wait_for(reader.readexactly(NONCE_BYTES + PROOF_BYTES),
                                        HANDSHAKE_TIMEOUT_S)
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
        raise HandshakeFailed(f"the actor pool closed the connection at its handshake "
                              f"({type(exc).__name__}): it holds another cluster key") from None
    pool_nonce, given = answer[:NONCE_BYTES], answer[NONCE_BYTES:]
    if not hmac.compare_digest(given, _proof(key, b"pool", client_nonce, pool_nonce)):
        raise HandshakeFailed("the actor pool failed its handshake: it holds another key")
    writer.write(_proof(key, b"client", client_nonce, pool_nonce))
    await writer.drain()


def install() -> None:
    """Patch xoscar's socket transports (once per process) to open every connection with the
    handshake."""
    from xoscar.backends.communication import socket as transports

    if getattr(transports, "_fleet_handshake", False):
        return
    base = transports._BaseSocketServer
    serve = base.on_connected

    async def on_connected(self: Any, reader: Any, writer: Any, **kwargs: Any) -> Any:
        if not await accept_handshake(reader, writer):
            writer.close()
            return None
        return await serve(self, reader, writer, **kwargs)

    base.on_connected = on_connected
    for client_class in (transports.SocketClient, transports.UnixSocketClient):
        client_class.connect = _handshaking(client_class)
    transports._fleet_handshake = True


def _handshaking(client_class: Any) -> Any:
    """`client_class.connect` that shakes hands on the new connection before it is used."""
    original = client_class.__dict__["connect"]
    opens = original.__func__  # a classmethod (TCP) or a staticmethod (unix socket)
    takes_class = isinstance(original, classmethod)

    async def connect(*args: Any, **kwargs: Any) -> Any:
        client = await opens(*args, **kwargs)
        channel = client.channel
        try:
            await offer_handshake(channel.reader, channel.writer)
        except BaseException:
            await channel.close()
            raise
        return client

    return classmethod(connect) if takes_class else staticmethod(connect)
