"""Where Fleet keeps its files and the defaults every component shares, in one typed place."""

from __future__ import annotations

import os
from pathlib import Path

from fleet.byte_sizes import parse_byte_size

DEFAULT_PORT = 9997
DEFAULT_ENDPOINT = f"http://127.0.0.1:{DEFAULT_PORT}"


def heartbeat_interval_s() -> float:
    return float(os.environ.get("FLEET_HEARTBEAT_INTERVAL_S", "5"))


def worker_timeout_s() -> float:
    """A worker silent for this long is considered gone and its replicas failed."""
    return float(os.environ.get("FLEET_WORKER_TIMEOUT_S", "30"))


def fleet_home() -> Path:
    """`FLEET_HOME`, default `~/.fleet`; read on every call so tests can point it elsewhere."""
    return Path(os.environ.get("FLEET_HOME") or Path.home() / ".fleet").expanduser()


def cache_dir() -> Path:
    return fleet_home() / "cache"


def logs_dir() -> Path:
    return fleet_home() / "logs"


def _switched_on(name: str) -> bool:
    """A switch that is on unless its variable says 0, false, no or off."""
    return os.environ.get(name, "1").lower() not in ("0", "false", "no", "off")


def warm_spare_enabled() -> bool:
    """A worker keeps one spare process with engine libraries imported, so launches skip the
    seconds-long imports of torch and sentence-transformers. `FLEET_WARM_SPARE=0` turns it off
    to save memory on small machines."""
    return _switched_on("FLEET_WARM_SPARE")


def metrics_enabled() -> bool:
    """Per-request metrics at /metrics; `FLEET_METRICS=0` turns the counting off (to measure it)."""
    return _switched_on("FLEET_METRICS")


def replica_channels_enabled() -> bool:
    """Streamed tokens and grouped embeddings/rerank calls travel on a socket per replica
    (fleet.channel.replica_end). `FLEET_REPLICA_CHANNELS=0` has the API poll streams and send
    the calls over actor calls instead: for networks that let the actor port through but not
    others."""
    return _switched_on("FLEET_REPLICA_CHANNELS")


# ---- supervision and timeouts (fleet.cluster.worker.replica_watch,
# fleet.cluster.supervisor.replica_supervision)
# Each is an environment variable so that tests and operators can shorten or lengthen it.


def _seconds(name: str, default: float) -> float:
    return float(os.environ.get(name, str(default)))


def process_watch_interval_s() -> float:
    """How often a worker looks at its replicas' processes: an exit is seen within this."""
    return _seconds("FLEET_PROCESS_WATCH_INTERVAL_S", 0.5)


def health_probe_interval_s() -> float:
    """How often a worker asks each of its replicas whether it still answers."""
    return _seconds("FLEET_HEALTH_PROBE_INTERVAL_S", 1.0)


def health_probe_timeout_s() -> float:
    """A replica that has not answered a probe within this is hung (SIGSTOP, a deadlock, a
    driver stuck in the kernel): its process is killed and it is launched again. Long enough
    for a replica whose engine keeps both cores busy to answer (it answers from its event loop,
    not its engine thread)."""
    return _seconds("FLEET_HEALTH_PROBE_TIMEOUT_S", 3.0)


def health_probe_misses() -> int:
    """Probes a ready replica must miss in a row to be called hung: one late answer on a
    machine whose cores are all taken (a neighbour compiling, a load test) is no hang."""
    return max(1, int(_seconds("FLEET_HEALTH_PROBE_MISSES", 2)))


def loading_hang_s() -> float:
    """How long a replica that has not yet answered as ready may go without answering before
    it is called hung. Loading weights can keep its process from answering for a while on a
    busy machine; the launch's own time limit covers a load that never ends."""
    return _seconds("FLEET_LOADING_HANG_S", 30.0)


def restart_backoff_s() -> float:
    """The wait before a failed replica's second restart; it doubles with each further one
    (the first restart is at once)."""
    return _seconds("FLEET_RESTART_BACKOFF_S", 1.0)


def restart_backoff_max_s() -> float:
    return _seconds("FLEET_RESTART_BACKOFF_MAX_S", 60.0)


def restart_limit() -> int:
    """Failures in a row after which a replica stays `failed` instead of restarting again."""
    return int(os.environ.get("FLEET_RESTART_LIMIT", "5"))


def restart_reset_s() -> float:
    """A replica that served this long since its last start counts its failures from zero."""
    return _seconds("FLEET_RESTART_RESET_S", 120.0)


def control_call_timeout_s() -> float:
    """Control calls between processes (launch a process, status, terminate, register)."""
    return _seconds("FLEET_CONTROL_CALL_TIMEOUT_S", 30.0)


def load_timeout_s() -> float:
    """Loading a model, downloads included."""
    return _seconds("FLEET_LOAD_TIMEOUT_S", 3600.0)


def request_timeout_s() -> float:
    """One request's call from the API to a replica (a whole answer, or one wait between two
    pieces of a stream). A backstop: a hung replica is found by the health probes sooner."""
    return _seconds("FLEET_REQUEST_TIMEOUT_S", 600.0)


def wake_timeout_s() -> float:
    """How long a request to an idle model waits for it to load (fleet.cluster.supervisor.elastic)
    before it is answered 503; the load goes on for the requests after it."""
    return _seconds("FLEET_WAKE_TIMEOUT_S", 300.0)


def drain_timeout_s() -> float:
    """How long a replica being removed may take to finish the requests it has."""
    return _seconds("FLEET_DRAIN_TIMEOUT_S", 30.0)


def restore_grace_s() -> float:
    """After a supervisor starts, how long models of the last run wait for their workers to
    come back and report the replicas they still run, before missing replicas are launched
    anew."""
    return _seconds("FLEET_RESTORE_GRACE_S", 8.0)


def image_url_ttl_s() -> float:
    """How long the images of `url` answers stay downloadable (fleet.api.image_files)."""
    return _seconds("FLEET_IMAGE_URL_TTL_S", 3600.0)


# ---- images in requests (fleet.api.image_inputs): what one image a client sends may cost


def image_max_bytes() -> int:
    """The most bytes one image in a request may have, encoded (FLEET_IMAGE_MAX_BYTES: bytes or
    an amount such as 20MiB). OpenAI's own cap on an image input is 20 MB."""
    return parse_byte_size(os.environ.get("FLEET_IMAGE_MAX_BYTES", "20MiB"))


def image_max_pixels() -> int:
    """The most pixels one image in a request may have, read from its header before any pixel
    is decoded: what bounds the memory its decoding takes (4 bytes a pixel in RGBA), whatever
    its size in bytes. 50 megapixels is more than any camera image a vision model reads."""
    return int(os.environ.get("FLEET_IMAGE_MAX_PIXELS", "50000000"))


def image_fetch_timeout_s() -> float:
    """The most time fetching one image URL may take, all of it: resolving the name,
    connecting, each redirect and the body."""
    return _seconds("FLEET_IMAGE_FETCH_TIMEOUT_S", 10.0)


def responses_max_stored() -> int:
    """The most stored responses of the Responses API the cluster keeps (the oldest go)."""
    return int(os.environ.get("FLEET_RESPONSES_MAX_STORED", "10000"))


def responses_max_age_days() -> float:
    """How long a stored response of the Responses API is kept, in days."""
    return float(os.environ.get("FLEET_RESPONSES_MAX_AGE_DAYS", "30"))
