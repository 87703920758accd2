"""The replica channel's handshake: each end proves that it knows the cluster secret
(fleet.cluster_secret) without sending it, before anything else crosses.

    replica -> API   {"challenge": replica_nonce}
    API -> replica   {"channel": token, "nonce": api_nonce, "proof": HMAC(api, both nonces, token)}
    replica -> API   {"ready": true, "proof": HMAC(replica, both nonces, token)}

Both proofs cover both fresh nonces, so neither can be replayed into another connection, and
each names its side, so one end's proof is no use as the other's. A connection whose API fails
the check is closed by the replica before it reads anything else; an API that does not hear a
valid proof back closes the connection and uses xoscar (also keyed by the secret) instead.

What it does not do: encrypt the frames or sign each one. Someone who can rewrite packets between
two hosts (not merely connect to a port) can still read or alter what crosses after the
handshake; run a cluster across networks you do not trust inside a VPN."""

from __future__ import annotations

import hmac
import secrets

from fleet.cluster_secret import sign

_CONTEXT = "fleet-replica-channel"


def new_nonce() -> str:
    return secrets.token_hex(16)


def proof(secret: str, side: str, replica_nonce: str, api_nonce: str, token: str) -> str:
    """`side` is "api" or "replica": whose proof this is."""
    return sign(secret, f"{_CONTEXT}|{side}|{replica_nonce}|{api_nonce}|{token}")


def check(secret: str, side: str, replica_nonce: str, api_nonce: str, token: str,
          given: object) -> bool:
    if not isinstance(given, str):
        return False
    expected = proof(secret, side, replica_nonce, api_nonce, token)
    return hmac.compare_digest(expected.encode(), given.encode())
