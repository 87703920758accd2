"""Where Fleet keeps its files and the defaults every component shares, in one typed place."""

from __future__ import annotations

import os
from pathlib import Path

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


def state_dir() -> Path:
    return fleet_home() / "state"


def registrations_dir() -> Path:
    return fleet_home() / "registrations"


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
    (fleet.cluster.replica_channel). `FLEET_REPLICA_CHANNELS=0` has the API poll streams and send
    the calls over actor calls instead: for networks that let the actor port through but not
    others."""
    return _switched_on("FLEET_REPLICA_CHANNELS")
