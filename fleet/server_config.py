"""What a cluster was started with: one typed object built from the command line (and its
environment variables) by `fleet local`, `fleet supervisor` and `fleet worker`, and handed to the
pieces that act on it (the API, the supervisor, the worker), instead of one argument each.

Security settings live here because they are the operator's choice, made when the cluster
starts, never by a request."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field

from fleet.settings import DEFAULT_PORT


def is_loopback(host: str) -> bool:
    """Whether a listen address keeps the port on this machine ("localhost", 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServerConfig(BaseModel):
    """Settings of one `fleet local`, `fleet supervisor` or `fleet worker` process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.host)
