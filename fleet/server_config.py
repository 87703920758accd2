"""What a cluster was started with: one typed object built from the command line (and its
environment variables) by `fleet local`, `fleet supervisor` and `fleet worker`, and handed to the
pieces that act on it (the API, the supervisor, the worker), instead of one argument each.

Security settings live here because they are the operator's choice, made when the cluster
starts, never by a request."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.byte_sizes import parse_byte_size
from fleet.errors import BadRequest
from fleet.keep_alive import parse_keep_alive
from fleet.port_range import parse_port_range
from fleet.settings import DEFAULT_PORT

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


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
    # The actor port of this process's pool (None: a free one at each start): the supervisor's,
    # which workers find either way, or a worker's (fleet worker --actor-port).
    actor_port: int | None = Field(default=None, ge=1, le=65535)
    # The ports the worker's replica processes listen on, two each (--replica-ports START-END,
    # fleet.cluster.worker.replica_ports); None: free ports the OS picks.
    replica_ports: tuple[int, int] | None = None
    # The cluster secret (fleet.cluster_secret): as given on the command line, else None until
    # the server resolves it at start (FLEET_HOME's, or a new one). Kept out of repr and logs.
    cluster_secret: str | None = Field(default=None, repr=False)
    # The state's database (fleet.database.url): None until the server resolves it at start
    # (FLEET_DATABASE_URL, else SQLite in FLEET_HOME). Out of repr: it may hold a password.
    database_url: str | None = Field(default=None, repr=False)
    # API keys (fleet.api.auth.middleware): the admin keys' SHA-256 in hex, never the keys themselves
    # (the command line hashes them); the users and keys of an auth config file.
    api_key_hashes: tuple[str, ...] = ()
    auth_config: Path | None = None
    insecure_no_auth: bool = False  # serve beyond loopback without keys, knowingly
    # Which browsers' requests the API serves (fleet.api.auth.request_guard): Host names beyond its
    # own ("*": any), and the web origins allowed to call it across sites (CORS; "*": any).
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    metrics_public: bool = False  # /metrics without a key
    # What launches may do on a cluster reachable from the network (fleet.cluster.supervisor.launch_policy):
    # read weights only under FLEET_HOME/cache and these folders, and neither run a model's own
    # Python nor set a replica's environment variables, unless allowed here.
    model_roots: tuple[Path, ...] = ()
    allow_remote_code: bool = False
    allow_launch_envs: bool = False
    allow_any_model_path: bool = False
    # How long a model without its own keep_alive stays loaded without a request (fleet.keep_alive);
    # None: never, so that nothing is unloaded unless someone asks for it.
    keep_alive: str | None = None
    # The most models one worker holds loaded (--max-loaded-models); past it, a launch or a load
    # unloads the least recently used model that has a keep_alive, or is refused.
    max_loaded_models: int | None = Field(default=None, ge=1)
    # The most RAM one worker's models may take together, by their estimates (--max-model-memory,
    # `fleet local` and `fleet worker`): what the operator keeps for everything else. Placement
    # uses it where it is less than the worker's free memory (fleet.cluster.supervisor.placement).
    max_model_memory: int | None = Field(default=None, ge=1)
    # Usage records (fleet.api.usage_recorder): kept this many days (0: for ever); and the
    # per-key Prometheus series, off unless asked (a series per key and model).
    usage_retention_days: int = Field(default=90, ge=0)
    metrics_per_key: bool = False
    # Images that requests name by http(s) URL, which the API then fetches itself
    # (fleet.api.image_fetch): off unless asked, and then only from public addresses and these
    # networks (an internal image store), never from the cluster's own.
    allow_image_urls: bool = False
    image_url_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @field_validator("api_key_hashes")
    @classmethod
    def _hashes_only(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not all(_SHA256_HEX.match(digest) for digest in value):
            raise ValueError("api_key_hashes holds SHA-256 hex digests, not keys")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _a_duration(cls, value: str | None) -> str | None:
        try:
            parse_keep_alive(value)
        except BadRequest as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("replica_ports", mode="before")
    @classmethod
    def _a_port_range(cls, value: str | tuple[int, int] | None) -> tuple[int, int] | None:
        return parse_port_range(value) if isinstance(value, str) else value

    @field_validator("max_model_memory", mode="before")
    @classmethod
    def _an_amount(cls, value: str | int | None) -> int | None:
        return None if value is None else parse_byte_size(value)

    @field_validator("image_url_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        """"10.0.0.0/8,fd00::/8" as the command line gives it; a network with host bits set
        (10.0.0.1/8) is refused rather than widened, since it most likely names the wrong one."""
        if value is None:  # the option not given
            return ()
        if isinstance(value, str):
            value = tuple(part for part in value.replace(",", " ").split() if part)
        if isinstance(value, (tuple, list)):
            try:
                return tuple(ipaddress.ip_network(part) if isinstance(part, str) else part
                             for part in value)
            except ValueError as exc:
                raise ValueError(f"not a network (CIDR such as 10.0.0.0/8): {exc}") from None
        return value

    @model_validator(mode="after")
    def _networks_need_urls(self) -> ServerConfig:
        if self.image_url_networks and not self.allow_image_urls:
            raise ValueError("--image-url-networks names where image URLs may be fetched from; "
                             "it needs --allow-image-urls (FLEET_ALLOW_IMAGE_URLS=1)")
        return self

    @property
    def on_loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_key_hashes) or self.auth_config is not None
