"""How `fleet worker -e URL` joins a supervisor with the cluster secret (fleet.cluster_secret).

1. It asks the supervisor's API where its actors listen (`GET /v1/address`), proving that it
   knows the secret with a timed HMAC in `X-Fleet-Worker-Proof` (the secret never travels).
   With API keys on, the API answers only an admin key or a valid proof.
2. It calls the supervisor's pool once before anything else. Every connection opens with a
   handshake on a key derived from the secret (fleet.actor_handshake), every frame is signed
   with it, and a pool drops a connection or frame that fails either: a worker with another
   secret sees its connection closed, and says so in one line instead of failing later inside
   its actor's start."""

from __future__ import annotations

import time

import httpx
import xoscar as xo
from xoscar.errors import ServerClosed

from fleet.actor_handshake import HandshakeFailed
from fleet.cluster.actor_uids import SUPERVISOR_UID
from fleet.cluster_secret import PROOF_WINDOW_S, timed_proof
from fleet.errors import BadRequest

WORKER_PROOF_HEADER = "X-Fleet-Worker-Proof"
ADDRESS_PURPOSE = "address"
WRONG_SECRET = "the supervisor refused this worker: wrong cluster secret"


def _where_to_find_it() -> str:
    return ("give it the supervisor's with --cluster-secret or FLEET_CLUSTER_SECRET (the "
            "supervisor keeps it in its FLEET_HOME, in the file cluster-secret)")


_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})


def reachable_address(actor_address: str, endpoint: str) -> str:
    """A supervisor listening on every interface (`-H 0.0.0.0`, as in a container) names its
    actors by that wildcard, which would lead a worker elsewhere to its own machine: the worker
    reaches them by the host it reached the API by instead (in Kubernetes, the Service's name)."""
    host, port = actor_address.rsplit(":", 1)
    if host not in _WILDCARDS:
        return actor_address
    return f"{httpx.URL(endpoint).host}:{port}"


def supervisor_actor_address(endpoint: str, secret: str, wait_s: float = 60.0) -> str:
    """Ask the supervisor's API where its actors listen, waiting while it starts."""
    deadline = time.monotonic() + wait_s
    url = f"{endpoint.rstrip('/')}/v1/address"
    while True:
        try:
            # A fresh proof on every try: one made a while ago may have aged out of its window.
            headers = {WORKER_PROOF_HEADER: timed_proof(secret, ADDRESS_PURPOSE)}
            response = httpx.get(url, headers=headers, timeout=5)
            if response.status_code in (401, 403):
                raise BadRequest(
                    f"{WRONG_SECRET} (or this machine's clock is more than {PROOF_WINDOW_S} s "
                    f"off the supervisor's): {_where_to_find_it()}")
            response.raise_for_status()
            return reachable_address(response.json(), endpoint)
        except (httpx.HTTPError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise BadRequest(f"cannot reach the supervisor at {endpoint}: {exc}") from None
            time.sleep(1)


async def check_admitted(supervisor_address: str) -> None:
    """One call to the supervisor's pool, signed with this process's key (installed by
    fleet.cluster_secret.install): a pool with another key closes the connection unanswered."""
    try:
        # actor_ref asks the pool whether the actor exists: a real, signed round trip.
        await xo.actor_ref(address=supervisor_address, uid=SUPERVISOR_UID)
    except (ServerClosed, HandshakeFailed):
        raise BadRequest(f"{WRONG_SECRET}: {_where_to_find_it()}") from None
    except OSError as exc:
        raise BadRequest(f"cannot reach the supervisor's actors at {supervisor_address}: "
                         f"{exc}") from None
