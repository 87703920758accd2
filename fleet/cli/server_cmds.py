"""`fleet local`, `fleet supervisor`, `fleet worker`: start the pieces of a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from fleet.catalogue.registry import format_validation_error
from fleet.errors import FleetError
from fleet.logging_setup import setup_logging
from fleet.server_config import ServerConfig
from fleet.settings import DEFAULT_ENDPOINT, DEFAULT_PORT


def run_event_loop(coroutine: Coroutine[Any, Any, None]) -> None:
    """uvloop where installed: the API's per-request overhead is mostly event-loop work."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coroutine)
        return
    uvloop.run(coroutine)


def _run(component: str, log_level: str, coroutine_factory) -> None:
    log_file = setup_logging(component, log_level)
    click.echo(f"Fleet {component}: logs in {log_file}", err=True)
    try:
        run_event_loop(coroutine_factory())
    except FleetError as exc:
        raise click.ClickException(exc.message) from None
    except KeyboardInterrupt:
        pass


_host = click.option("-H", "--host", default="127.0.0.1", show_default=True,
                     help="Address to listen on (0.0.0.0 for every interface).")
_port = click.option("-p", "--port", default=DEFAULT_PORT, show_default=True, type=int,
                     envvar="FLEET_PORT", help="Port of the HTTP API (or FLEET_PORT).")
_actor_port = click.option(
    "--actor-port", type=click.IntRange(1, 65535), default=None, envvar="FLEET_ACTOR_PORT",
    help="Port of the supervisor's actors (or FLEET_ACTOR_PORT); default: a free one at each "
         "start. Workers find it either way, through the API; fix it for a firewall.")
# A worker's own pool (`fleet worker`); in `fleet local` the one pool is --actor-port's.
_worker_actor_port = click.option(
    "--actor-port", type=click.IntRange(1, 65535), default=None, envvar="FLEET_ACTOR_PORT",
    help="Port of this worker's actors (or FLEET_ACTOR_PORT); default: a free one at each "
         "start. The supervisor learns it when the worker joins; fix it for a firewall.")
_replica_ports = click.option(
    "--replica-ports", "replica_ports", envvar="FLEET_REPLICA_PORTS", metavar="START-END",
    help="Ports the model replicas' processes listen on, two each: actors and the API's "
         "channel (or FLEET_REPLICA_PORTS; 30000-30099 holds 50 replicas). Default: free ports "
         "at each launch. Fix them for a firewall or a NetworkPolicy.")
_cluster_secret = click.option(
    "--cluster-secret", envvar="FLEET_CLUSTER_SECRET", metavar="SECRET",
    help="The secret every process of the cluster shares (or FLEET_CLUSTER_SECRET); default: "
         "the one in FLEET_HOME/cluster-secret, made at the supervisor's first start. A worker "
         "on another machine needs the supervisor's.")

_database_url = click.option(
    "--database-url", envvar="FLEET_DATABASE_URL", metavar="URL",
    help="Where the cluster keeps its state: registrations, launched models (or "
         "FLEET_DATABASE_URL). sqlite:////path/to/fleet.db, or postgresql://user:password@host/db "
         "with the postgres extra; default: SQLite in FLEET_HOME/fleet.db. See docs/database.md.")


def _hash_api_keys(ctx: click.Context, param: click.Parameter, keys: tuple[str, ...]) -> tuple:
    """Keys become their SHA-256 as they are read: the plain key goes no further."""
    from fleet.api.auth.keys import check_key_text, hash_key

    try:
        return tuple(hash_key(check_key_text(key)) for key in keys)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _api_options(command: Any) -> Any:
    """API keys and who may reach the API: for the commands that serve it."""
    options = [
        click.option("--api-key", "api_key_hashes", multiple=True, envvar="FLEET_API_KEY",
                     callback=_hash_api_keys, metavar="KEY",
                     help="An admin API key (repeatable; or FLEET_API_KEY, keys separated by "
                          "spaces). With keys, every route but /status and /v1/cluster/auth needs one."),
        click.option("--auth-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     envvar="FLEET_AUTH_CONFIG",
                     help="JSON file of users, their permissions, API keys and models "
                          "(Xinference's user_config shape; see docs/security.md)."),
        click.option("--insecure-no-auth", is_flag=True,
                     help="Serve on a non-loopback address without API keys (anyone who "
                          "reaches the port controls the cluster)."),
        click.option("--metrics-public", is_flag=True,
                     help="Serve /metrics without a key when keys are on."),
        click.option("--allowed-host", "allowed_hosts", multiple=True,
                     envvar="FLEET_ALLOWED_HOSTS", metavar="NAME",
                     help="A host name clients reach the API by, besides its listen address "
                          "(repeatable; or FLEET_ALLOWED_HOSTS, separated by spaces; "
                          "'*.example.com' for the names under a domain; '*' for any, behind a "
                          "proxy that checks it). Other Host headers are refused: a web page "
                          "could otherwise reach the API by rebinding its own name."),
        click.option("--usage-retention-days", "usage_retention_days",
                     type=click.IntRange(min=0), default=90, show_default=True,
                     envvar="FLEET_USAGE_RETENTION_DAYS", metavar="DAYS",
                     help="Keep the usage records (GET /v1/usage, `fleet usage`) this many "
                          "days; 0 keeps them for ever."),
        click.option("--metrics-per-key", "metrics_per_key", is_flag=True,
                     envvar="FLEET_METRICS_PER_KEY",
                     help="Add per-API-key series to /metrics (fleet_key_requests_total, "
                          "fleet_key_tokens_total): a series per key and model."),
        click.option("--cors-origin", "cors_origins", multiple=True, envvar="FLEET_CORS_ORIGINS",
                     metavar="ORIGIN",
                     help="A web origin (https://app.example.com) whose pages may call the API "
                          "from the browser (repeatable; or FLEET_CORS_ORIGINS, separated by "
                          "spaces; '*' for any). Default: none."),
        click.option("--allow-image-urls", "allow_image_urls", is_flag=True,
                     envvar="FLEET_ALLOW_IMAGE_URLS",
                     help="Fetch the images that chat requests name by http(s) URL (or "
                          "FLEET_ALLOW_IMAGE_URLS=1); only from public addresses, unless "
                          "--image-url-networks names more. Default: images come inline "
                          "(data: URLs, base64) only. See docs/security.md."),
        click.option("--image-url-networks", "image_url_networks",
                     envvar="FLEET_IMAGE_URL_NETWORKS", metavar="CIDR[,CIDR]",
                     help="Networks beyond the public internet that image URLs may reach, such "
                          "as an internal image store's 10.20.0.0/16 (or "
                          "FLEET_IMAGE_URL_NETWORKS); needs --allow-image-urls."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _launch_policy_options(command: Any) -> Any:
    """What launches may do when the API is reachable from the network: the operator's choice
    (fleet.cluster.supervisor.launch_policy). On loopback every launch keeps today's freedom."""
    options = [
        click.option("--model-root", "model_roots", multiple=True, envvar="FLEET_MODEL_ROOTS",
                     type=click.Path(file_okay=False, resolve_path=True, path_type=Path),
                     metavar="DIR",
                     help="A folder launches may load weights from (repeatable; or "
                          "FLEET_MODEL_ROOTS, separated by ':'), besides FLEET_HOME/cache."),
        click.option("--allow-remote-code", is_flag=True,
                     help="Let launches set trust_remote_code (run a model folder's Python)."),
        click.option("--allow-launch-envs", is_flag=True,
                     help="Let launches set envs (environment variables of the replica)."),
        click.option("--allow-any-model-path", is_flag=True,
                     help="Let launches load weights from any path the workers can read."),
        click.option("--keep-alive", "keep_alive", envvar="FLEET_KEEP_ALIVE", metavar="DURATION",
                     help="Unload a model after this long without a request (30s, 10m, 1h), "
                          "unless its launch says otherwise; its next request loads it. "
                          "Default: never."),
        click.option("--max-loaded-models", "max_loaded_models", type=click.IntRange(min=1),
                     envvar="FLEET_MAX_LOADED_MODELS", default=None, metavar="N",
                     help="The most models one worker holds loaded; past it, the least recently "
                          "used model with a keep_alive is unloaded to make room."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


# Taken by the commands that run a worker (`fleet local`, `fleet worker`): the RAM it leaves
# to the rest of the machine.
_max_model_memory = click.option(
    "--max-model-memory", "max_model_memory", envvar="FLEET_MAX_MODEL_MEMORY", metavar="SIZE",
    help="The most RAM this worker's models may take together, by their memory estimates "
         "(2GiB, 512MiB, 1.5GB; or FLEET_MAX_MODEL_MEMORY), to keep the rest for other "
         "programs; placement uses it where it is less than the free RAM. Past it, the least "
         "recently used model with a keep_alive is unloaded to make room. Default: no cap.")


def server_config(options: dict[str, Any]) -> ServerConfig:
    """The command's options as one typed object; a value it refuses is a usage error."""
    try:
        return ServerConfig(**options)
    except ValidationError as exc:
        raise click.UsageError(format_validation_error(exc)) from None


_log_level = click.option("--log-level", default="INFO", show_default=True,
                          type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                            case_sensitive=False))


@click.command()
@_host
@_port
@_api_options
@_launch_policy_options
@_max_model_memory
@_actor_port
@_replica_ports
@_cluster_secret
@_database_url
@_log_level
def local(log_level: str, **options: Any) -> None:
    """Start a one-machine cluster: supervisor, worker and API server."""
    from fleet.server import run_cluster

    config = server_config(options)
    _run("local", log_level, lambda: run_cluster(config, with_worker=True))


@click.command()
@_host
@_port
@_api_options
@_launch_policy_options
@_actor_port
@_cluster_secret
@_database_url
@_log_level
def supervisor(log_level: str, **options: Any) -> None:
    """Start the supervisor and the API server; workers join it with `fleet worker -e`."""
    from fleet.server import run_cluster

    config = server_config(options)
    _run("supervisor", log_level, lambda: run_cluster(config, with_worker=False))


@click.command()
@click.option("-e", "--endpoint", default=DEFAULT_ENDPOINT, show_default=True,
              help="The supervisor's API address.")
@click.option("-H", "--host", default=None,
              help="Address this worker listens on [default: the one facing the supervisor].")
@_max_model_memory
@_worker_actor_port
@_replica_ports
@_cluster_secret
@_log_level
def worker(endpoint: str, log_level: str, **options: Any) -> None:
    """Start a worker on this machine and join the supervisor at ENDPOINT."""
    from fleet.server import run_worker

    # The worker finds its own address (the one facing the supervisor) when not given one.
    host = options.pop("host")
    config = server_config({**options, "host": host or "127.0.0.1"})
    _run("worker", log_level, lambda: run_worker(endpoint, host, config))
