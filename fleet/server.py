"""Starting the pieces: `fleet local` (supervisor + worker + API in one process),
`fleet supervisor` (supervisor + API) and `fleet worker` (joins a supervisor). The same code
builds all three; local mode is the other two in one actor pool."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Coroutine
from typing import Any

import xoscar as xo

from fleet import cluster_secret
from fleet.errors import BadRequest
from fleet.server_config import ServerConfig
from fleet.settings import warm_spare_enabled

# Ending the replicas at a stop: their processes are killed, and what their engines started gets
# SIGTERM and 5 s before SIGKILL (fleet.cluster.worker.process_tree).
_END_REPLICAS_S = 30.0

logger = logging.getLogger(__name__)


def _keep_torch_out_of_this_process() -> None:
    """xoscar registers a lazy serializer for torch tensors and imports torch when a pool
    starts (2 s and 230 MB). Supervisor and worker never see a tensor (replicas return numpy),
    so the handler is dropped here; model processes keep it."""
    try:
        from xoscar.serialization.torch import TorchTensorSerializer

        TorchTensorSerializer.unregister("torch.Tensor")
    except Exception:  # an xoscar without it needs no workaround
        pass


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BadRequest(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _actor_pool_address(host: str, port: int = 0) -> str:
    # Port 0: the OS picks a free port; workers learn it from GET /v1/address (and again after
    # a restart, fleet.cluster.worker.supervisor_link). `--actor-port` fixes it, for firewalls.
    return f"{host}:{port}"


async def _create_pool(host: str, port: int = 0) -> Any:
    _keep_torch_out_of_this_process()
    # auto_recover off: xoscar would restart a dead replica process at its old address and
    # create its ModelActor again, unloaded, and the replica would answer 503 for ever. The
    # worker's watch (fleet.cluster.worker.replica_watch) reports it and the supervisor relaunches it.
    return await xo.create_actor_pool(_actor_pool_address(host, port), n_process=0,
                                      auto_recover=False)


async def _start_supervisor(pool: Any, config: ServerConfig) -> Any:
    from fleet.cluster.supervisor.actor import SupervisorActor

    # The config carries the operator's launch policy (fleet.cluster.supervisor.launch_policy).
    return await xo.create_actor(
        SupervisorActor, config, address=pool.external_address,
        uid=SupervisorActor.default_uid()
    )


async def _start_worker(pool: Any, supervisor_address: str, config: ServerConfig,
                        endpoint: str | None = None) -> Any:
    from fleet.cluster.worker.actor import WorkerActor

    # `endpoint`: the supervisor's API, where the worker finds it again after it restarts.
    return await xo.create_actor(
        WorkerActor, supervisor_address, pool, warm_spare_enabled(), endpoint,
        config.max_model_memory, config.replica_ports, address=pool.external_address,
        uid=WorkerActor.default_uid(),
    )


async def _serve_api(supervisor: Any, supervisor_address: str, config: ServerConfig) -> None:
    import uvicorn

    from fleet.api.app import create_app
    from fleet.api.auth.live_keys import LiveKeys
    from fleet.api.auth.middleware import key_store
    from fleet.api.body_parsing import close_helper
    from fleet.api.responses.store import response_store
    from fleet.api.usage_recorder import UsageRecorder
    from fleet.database.usage import UsageStore

    store = key_store(config)
    # The usage records, in the keys' database, written in batches (fleet.api.usage_recorder).
    usage = (UsageRecorder(UsageStore(store.keys.db), config.usage_retention_days)
             if isinstance(store, LiveKeys) else None)
    # The Responses API's stored responses, in the same database (fleet.api.responses.store).
    responses = response_store(store.keys.db) if isinstance(store, LiveKeys) else None
    app = create_app(supervisor, supervisor_address, config, store, usage, responses)
    uvicorn_config = uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                    access_log=False, loop="none", lifespan="off")
    server = uvicorn.Server(uvicorn_config)
    logger.info("Fleet API listening on http://%s:%d (docs at /docs)", config.host, config.port)
    # The keys made through the API, followed from the database (fleet.api.auth.live_keys).
    keys = store if isinstance(store, LiveKeys) else None
    following = asyncio.create_task(keys.follow()) if keys is not None else None
    recording = asyncio.create_task(usage.run()) if usage is not None else None
    try:
        await server.serve()
    finally:
        close_helper()  # a parse under way ends with the server, not after it
        if recording is not None:
            recording.cancel()
        # What they have left is written before the database closes with the keys'; each on
        # its own, so that one that fails does not cost the others their last writes.
        for writer in (usage, responses):
            if writer is not None:
                _close_quietly(writer)
        if keys is not None and following is not None:
            following.cancel()
            _last_writes(keys)


def _close_quietly(writer: Any) -> None:
    try:
        writer.close()
    except Exception as exc:  # stopping anyway: what it had left is lost, and said so
        logger.warning("could not finish the writes of %s: %r", type(writer).__name__, exc)


def _last_writes(keys: Any) -> None:
    """The keys' last use noted since the last batch, then the API's database closed. Without
    an await: after a SIGINT, uvicorn raises it again, and asyncio.run cancels this task."""
    try:
        keys.flush_used_now()
    except Exception as exc:  # stopping anyway: the last 30 s of last use are lost
        logger.warning("could not write the API keys' last use: %r", exc)
    keys.keys.db.close()


async def run_cluster(config: ServerConfig, with_worker: bool) -> None:
    """`fleet local` (with_worker) or `fleet supervisor`: runs until SIGINT/SIGTERM."""
    from fleet.api.auth.keys import KeyStore
    from fleet.api.auth.middleware import check_exposure

    check_exposure(config)
    if config.auth_enabled:  # a bad auth config file stops the start here, before any pool
        KeyStore.build(config.api_key_hashes, config.auth_config)
    _check_port_free(config.host, config.port)
    # Before any pool: every pool of the cluster, and every replica process, signs and checks
    # its frames with the secret's key (fleet.cluster_secret.install).
    secret = cluster_secret.load_or_create(config.cluster_secret)
    cluster_secret.install(secret)
    config = config.model_copy(update={"cluster_secret": secret,
                                       "database_url": _prepare_state(config.database_url)})
    started = time.monotonic()
    pool = await _create_pool(config.host, config.actor_port or 0)
    try:
        supervisor = await _start_supervisor(pool, config)
        if with_worker:
            await _start_worker(pool, pool.external_address, config)
        logger.info("cluster started in %.2f s (actors at %s)",
                    time.monotonic() - started, pool.external_address)
        await _serve_api(supervisor, pool.external_address, config)
    finally:
        logger.info("stopping: ending every model process")
        await _through_one_interrupt(_stop_cluster(pool, with_worker))


def _prepare_state(url: str | None) -> str:
    """The state's database, upgraded to this Fleet's schema and holding what an older Fleet
    left in FLEET_HOME's files, before any pool starts: a database that cannot be used stops
    the start with the reason. The URL the supervisor is to open."""
    from fleet.database import open_database
    from fleet.settings import fleet_home

    db = open_database(url, import_from=fleet_home())
    logger.info("cluster state in %s", db.shown)
    db.close()
    return db.url.render_as_string(hide_password=False)


async def _stop_cluster(pool: Any, with_worker: bool) -> None:
    await _close_route_events(pool)
    if with_worker:
        await _end_replicas(pool)
    await pool.stop()


async def _through_one_interrupt(cleanup: Coroutine[Any, Any, None]) -> None:
    """Runs the stop to its end though this task is cancelled once: uvicorn, once it has
    stopped on a SIGINT, raises that signal again, and asyncio.run answers it by cancelling the
    main task, which would cut the stop short and leave the replicas' engines running. A
    second Ctrl-C still stops everything at once (asyncio.run raises KeyboardInterrupt)."""
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _end_replicas(pool: Any) -> None:
    """The worker ends its replicas itself, with what their engines started: stopping the pool
    would end the replicas' processes and leave those."""
    from fleet.cluster.worker.actor import WorkerActor

    try:
        worker = await xo.actor_ref(address=pool.external_address, uid=WorkerActor.default_uid())
        await asyncio.wait_for(worker.end_replicas(), _END_REPLICAS_S)
    except Exception as exc:  # never started, or stuck: the pool ends what it can
        logger.warning("ending the replicas: %r", exc)


async def _close_route_events(pool: Any) -> None:
    """The API's long poll for route changes (fleet.cluster.supervisor.route_events) answers now, rather
    than hang on a pool that stops under it."""
    from fleet.cluster.supervisor.actor import SupervisorActor

    try:
        supervisor = await xo.actor_ref(address=pool.external_address,
                                        uid=SupervisorActor.default_uid())
        await supervisor.close_route_events()
    except Exception as exc:  # it never started: nothing listens
        logger.debug("closing route events: %r", exc)


def _local_ip_towards(address: str) -> str:
    """The address of this machine on the route to the supervisor."""
    host = address.rsplit(":", 1)[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((host, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


async def run_worker(endpoint: str, host: str | None, config: ServerConfig) -> None:
    from fleet.worker_join import check_admitted, supervisor_actor_address

    secret = cluster_secret.for_worker(config.cluster_secret)
    cluster_secret.install(secret)
    supervisor_address = supervisor_actor_address(endpoint, secret)
    await check_admitted(supervisor_address)
    host = host or _local_ip_towards(supervisor_address)
    pool = await _create_pool(host, config.actor_port or 0)
    try:
        await _start_worker(pool, supervisor_address, config, endpoint)
        logger.info("worker %s joined the supervisor at %s", pool.external_address, endpoint)
        await _wait_for_signal()
    finally:
        logger.info("stopping worker: ending every model process")
        await _through_one_interrupt(_stop_worker(pool))


async def _stop_worker(pool: Any) -> None:
    await _end_replicas(pool)
    await pool.stop()
