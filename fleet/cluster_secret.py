"""The cluster secret: one random value shared by every process of a cluster.

It closes the cluster's private doors: xoscar's actor ports (which unpickle what reaches them)
use it as their authentication key, a worker proves it knows it before it learns the
supervisor's actor address, and the replica channel's peers prove it to each other. It never
travels itself: peers send an HMAC of a purpose, a time or a challenge, keyed by it.

`fleet local` and `fleet supervisor` generate it at first start and keep it in
FLEET_HOME/cluster-secret (mode 0600); a worker on another machine is given it with
`--cluster-secret` or FLEET_CLUSTER_SECRET."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from fleet.errors import BadRequest
from fleet.settings import fleet_home

SECRET_FILE = "cluster-secret"
MIN_LENGTH = 16
# What this process and the pools it starts read the secret from (they inherit the environment).
ENV_SECRET = "FLEET_CLUSTER_SECRET"
# xoscar signs and checks every frame with this variable's value (xoscar.serialization._security).
ENV_XOSCAR_KEY = "XOSCAR_AUTH_KEY"
# A proof made from a clock is good for this long either way (clocks of two hosts differ).
PROOF_WINDOW_S = 300


def secret_path() -> Path:
    return fleet_home() / SECRET_FILE


def validate(secret: str) -> str:
    secret = secret.strip()
    if len(secret) < MIN_LENGTH:
        raise BadRequest(f"the cluster secret must be at least {MIN_LENGTH} characters long")
    return secret


def load_or_create(given: str | None = None) -> str:
    """The secret given, else the one kept in FLEET_HOME, else a new one written there."""
    if given:
        return validate(given)
    path = secret_path()
    if path.is_file():
        return validate(path.read_text(encoding="utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    # Created with 0600 from the start, and only if nobody wrote one meanwhile.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return validate(path.read_text(encoding="utf-8"))
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret)
    return secret


def for_worker(given: str | None = None) -> str:
    """A worker's secret: the one given, else the one in this machine's FLEET_HOME (a worker
    beside its supervisor shares it). A worker never makes one up: it could not join."""
    if given:
        return validate(given)
    path = secret_path()
    if path.is_file():
        return validate(path.read_text(encoding="utf-8"))
    raise BadRequest(
        "this worker has no cluster secret: give it the supervisor's with --cluster-secret or "
        f"{ENV_SECRET} (the supervisor keeps it in its FLEET_HOME, in the file {SECRET_FILE})")


def xoscar_key(secret: str) -> str:
    """xoscar's authentication key: derived, so that a key read from a pool's environment is
    not also the secret that proves a worker or opens a replica channel elsewhere."""
    return sign(secret, "xoscar-auth-key")


def install(secret: str) -> None:
    """Make this process, and every pool and replica process it starts (they inherit the
    environment), use the secret: xoscar refuses frames not signed with its key, before it
    unpickles anything; every actor connection opens with a handshake on that key
    (fleet.actor_handshake); replica channels read it from here (`from_environment`)."""
    from fleet import actor_handshake

    os.environ[ENV_SECRET] = secret
    os.environ[ENV_XOSCAR_KEY] = xoscar_key(secret)
    actor_handshake.install()


def from_environment() -> str | None:
    """The secret `install` gave this process (or its parent), if any."""
    return os.environ.get(ENV_SECRET) or None


def sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def timed_proof(secret: str, purpose: str, now: float | None = None) -> str:
    """`<unix time>:<nonce>:<hmac>`: proves knowledge of the secret for one purpose, once, for
    a while (the nonce makes every proof unique, so that its checker can refuse it again)."""
    stamp = int(now if now is not None else time.time())
    nonce = secrets.token_hex(16)
    return f"{stamp}:{nonce}:{sign(secret, f'{purpose}:{stamp}:{nonce}')}"


def check_timed_proof(secret: str, purpose: str, proof: str, now: float | None = None) -> bool:
    parts = proof.split(":")
    if len(parts) != 3:
        return False
    stamp_text, nonce, mac = parts
    if not stamp_text.isdigit() or len(nonce) != 32 or len(mac) != 64:
        return False
    if abs(int(now if now is not None else time.time()) - int(stamp_text)) > PROOF_WINDOW_S:
        return False
    return hmac.compare_digest(mac, sign(secret, f"{purpose}:{stamp_text}:{nonce}"))


class SpentProofs:
    """The proofs a checker has accepted, kept while they would still verify, so that each one
    opens its door once: a proof recorded on the network is worth nothing afterwards. Only
    proofs that verified are kept, so someone without the secret cannot fill it."""

    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}

    def spend(self, proof: str, now: float | None = None) -> bool:
        """True the first time a (verified) proof is spent, False ever after."""
        now = time.time() if now is None else now
        for old in [p for p, expiry in self._expiry.items() if expiry < now]:
            del self._expiry[old]
        if proof in self._expiry:
            return False
        self._expiry[proof] = now + 2 * PROOF_WINDOW_S  # its stamp may lie a window ahead
        return True
