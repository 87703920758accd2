"""WorkerActor: one per machine. Reports resources to the supervisor, and starts and ends the
sub-process pools that host model replicas.

Launch speed: a fresh Python process needs seconds to import torch and sentence-transformers,
so the worker keeps one spare sub-process with the engine libraries already imported and hands
it to the next launch, then warms another in the background."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import msgspec
import xoscar as xo

from fleet.channel.replica_end import CHANNEL_PORT_ENV
from fleet.cluster.actor_uids import WORKER_UID
from fleet.cluster.deadlines import within
from fleet.cluster.replica.model_actor import ModelActor
from fleet.cluster.weights.cache_inventory import WorkerCache
from fleet.cluster.weights.download import local_weights
from fleet.cluster.worker import resources
from fleet.cluster.worker.gpu_owners import GpuOwners
from fleet.cluster.worker.process_tree import end_all, spawned_by
from fleet.cluster.worker.replica_ports import ReplicaPorts
from fleet.cluster.worker.replica_watch import ReplicaWatch
from fleet.cluster.worker.resources import machine_resources
from fleet.cluster.worker.supervisor_link import SupervisorLink
from fleet.errors import Unavailable
from fleet.messages import ReplicaLaunch
from fleet.settings import control_call_timeout_s

logger = logging.getLogger(__name__)

_WARMUP_MODULES = ["fleet.engines.warmup"]
# Imported first by every replica's process, before its pool opens a port (the handshake of
# every actor connection, fleet.actor_handshake).
_SETUP_MODULES = ["fleet.cluster.replica.subpool_setup"]
# Replica processes keep OpenMP's default wait policy (spin a little, then sleep). PASSIVE
# (sleep at once) was tried: every small parallel op then pays a thread wake-up, which measured
# here on 2 cores doubled one MiniLM encode (11.3 ms instead of 5.7), cut embedding throughput at
# concurrency 16 (255 against 306 req/s) and made SmolLM2 decode 40% slower (50 ms a step
# instead of 30). ACTIVE (spin always) starves the other processes. Users may still set
# OMP_WAIT_POLICY themselves; replica processes inherit the worker's environment.


class WorkerActor(xo.StatelessActor):
    def __init__(self, supervisor_address: str, main_pool: Any, warm_spare: bool = True,
                 endpoint: str | None = None, model_memory_limit: int | None = None,
                 replica_ports: tuple[int, int] | None = None):
        super().__init__()
        # The ports replica processes listen on, when the operator fixed a range (--replica-ports).
        self._ports = ReplicaPorts(replica_ports) if replica_ports else None
        # What it reports of the machine, with the operator's cap on its models' RAM
        # (--max-model-memory), which placement reads from the report.
        self._resources = functools.partial(machine_resources, model_memory_limit)
        # Joins, heartbeats, and finding a restarted supervisor (fleet.cluster.worker.supervisor_link).
        self._supervisor = SupervisorLink(supervisor_address, endpoint, self._running,
                                          self._resources)
        self._main_pool = main_pool
        self._warm_spare = warm_spare
        self._spare: asyncio.Task[str] | None = None
        self._replica_pools: dict[str, str] = {}
        # Each replica's launch request, as the supervisor's state file records it: reported
        # with the replica when joining again, so a supervisor that lost its state can rebuild
        # the model around the replica instead of ending it (fleet.cluster.supervisor.restore).
        self._requests: dict[str, dict[str, Any]] = {}
        # Replica keys terminated before their process existed, with when (pruned after an hour).
        self._cancelled: dict[str, float] = {}
        # Which replicas run on which GPU; several may share one (fleet.cluster.worker.gpu_owners).
        self._gpu_owners = GpuOwners()
        self._heartbeat_task: asyncio.Task[None] | None = None
        # The weights cache, and which replicas read from it (fleet.cluster.weights.cache_inventory).
        self._cache = WorkerCache()
        # Replica processes that exit or hang are noticed here (fleet.cluster.worker.replica_watch);
        # reports the supervisor has not heard yet (it may be restarting) wait in _unreported.
        self._watch = ReplicaWatch(main_pool, self._replica_down)
        self._unreported: dict[str, str] = {}

    @classmethod
    def default_uid(cls) -> str:
        return WORKER_UID

    async def __post_create__(self) -> None:
        await self._supervisor.join(self.address)
        self._heartbeat_task = asyncio.create_task(self._supervisor.run(self.address,
                                                                        self._report_down))
        self._watch.start()
        if self._warm_spare:
            self._start_spare()

    async def __pre_destroy__(self) -> None:
        if self._heartbeat_task:
            self._heartbeat_task.cancel()
        self._watch.stop()

    async def end_replicas(self) -> None:
        """End every replica's process, and what its engine started (vLLM's engine core): the
        worker is stopping. Stopping the pool would end the replicas' processes alone."""
        self._watch.stop()
        replicas, self._replica_pools, self._requests = dict(self._replica_pools), {}, {}
        # Killed at once (force): nothing of theirs is needed any more, and one busy loading
        # would take its full grace to answer a stop message.
        await asyncio.gather(*(self._end_process(key, address, force=True)
                               for key, address in replicas.items()), return_exceptions=True)

    def _start_spare(self) -> None:
        self._spare = asyncio.create_task(self._new_sub_pool(_WARMUP_MODULES))

    async def _new_sub_pool(self, modules: list[str] | None = None) -> str:
        modules = [*_SETUP_MODULES, *(modules or [])]
        if self._ports is None:
            return await self._main_pool.append_sub_pool(modules=modules)
        pool_port, channel_port = self._ports.take()
        address = f"{self.address.rsplit(':', 1)[0]}:{pool_port}"
        try:
            return await self._main_pool.append_sub_pool(
                external_address=address, modules=modules,
                env={CHANNEL_PORT_ENV: str(channel_port)})
        except BaseException:
            self._ports.release(address)
            raise

    async def _remove_sub_pool(self, address: str, force: bool = False) -> None:
        try:
            await self._main_pool.remove_sub_pool(address, timeout=5, force=force)
        finally:
            if self._ports is not None:
                self._ports.release(address)

    async def _take_sub_pool(self) -> str:
        """The warm spare if there is one (waiting for it if it is still warming), else a new one."""
        spare, self._spare = self._spare, None
        if self._warm_spare:
            self._start_spare()
        if spare is not None:
            try:
                return await spare
            except Exception as exc:
                logger.warning("warm spare failed to start (%s); starting a fresh process", exc)
        return await self._new_sub_pool()

    def _assign_gpus(self, replica_key: str, launch: ReplicaLaunch) -> ReplicaLaunch:
        """The launch on the GPUs it gets here (those placement chose, recorded as shared with
        the replicas already there), with CUDA_VISIBLE_DEVICES set and its engine told its
        share of their memory; unchanged when it runs on the CPU."""
        info = resources.gpu_info()
        gpus = self._gpu_owners.assign(replica_key, info, launch.n_gpu, launch.gpu_idx,
                                       launch.gpu_memory_bytes, self.address)
        if not gpus:
            return launch
        options = launch.engine_options
        if launch.gpu_memory_bytes:
            # The smallest of its GPUs bounds the fraction an engine may take of each.
            total = min(int(g.get("memory_total", 0)) for g in info if g["index"] in gpus)
            if total > 0:
                options = options.with_gpu_share(min(1.0, launch.gpu_memory_bytes / total))
        return msgspec.structs.replace(
            launch, device="cuda", gpu_idx=gpus, engine_options=options,
            envs={**launch.envs, "CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))})

    async def launch_replica(self, replica_key: str, launch: ReplicaLaunch) -> dict[str, Any]:
        """Start a process for the replica and create its ModelActor there (not yet loaded)."""
        # A missing path is the user's mistake: say so before spending a process on it.
        local_weights(launch.model_path, launch.spec)
        request = launch.request
        # The replica does not read the request: it stays here.
        launch = self._assign_gpus(replica_key, msgspec.structs.replace(launch, request={}))
        gpus = self._gpu_owners.gpus_of(replica_key)
        try:
            address = await self._take_sub_pool()
        except BaseException:
            self._release_gpus(replica_key)
            raise
        if replica_key in self._cancelled:
            # Terminated while its process was starting: end it instead of serving it.
            del self._cancelled[replica_key]
            self._release_gpus(replica_key)
            await self._remove_sub_pool(address)
            raise Unavailable(f"replica {replica_key} was terminated while launching")
        self._replica_pools[replica_key] = address
        self._requests[replica_key] = request or {}
        self._cache.track(replica_key, launch)
        actor_uid = ModelActor.uid_for(replica_key)
        try:
            await within(xo.create_actor(ModelActor, replica_key.split(":")[0], launch,
                                         address=address, uid=actor_uid),
                         control_call_timeout_s(), "the new replica process")
        except BaseException:
            await self.terminate_replica(replica_key)
            raise
        self._watch.watch(replica_key, address, actor_uid)
        return {"address": address, "actor_uid": actor_uid, "gpus": gpus,
                "pid": self._watch.pid(address)}

    def _release_gpus(self, replica_key: str) -> None:
        self._gpu_owners.release(replica_key)

    async def terminate_replica(self, replica_key: str) -> None:
        """End the replica's process: its memory goes back to the machine."""
        self._watch.forget(replica_key)
        self._release_gpus(replica_key)
        self._cache.untrack(replica_key)
        self._requests.pop(replica_key, None)
        address = self._replica_pools.pop(replica_key, None)
        if address is None:
            # Possibly still starting (the launch call was cancelled mid-way): remember it.
            now = time.monotonic()
            self._cancelled = {k: t for k, t in self._cancelled.items() if now - t < 3600}
            self._cancelled[replica_key] = now
            return
        await self._end_process(replica_key, address)
        logger.info("replica %s terminated, process %s ended", replica_key, address)

    async def _end_process(self, replica_key: str, address: str, force: bool = False) -> None:
        spawned = self._watch.take_spawned(replica_key) | spawned_by(self._watch.pid(address))
        try:
            # A stop message first (the process cleans up), killed if it does not end in 5 s.
            await within(self._remove_sub_pool(address, force=force),
                         control_call_timeout_s(), "ending the replica's process")
        except Exception as exc:
            logger.warning("removing process of %s: %s", replica_key, exc)
        # What its engine started (vLLM's engine core) and did not end with it.
        await asyncio.to_thread(end_all, spawned)

    async def _replica_down(self, replica_key: str, reason: str) -> None:
        """A replica's process exited or hung (fleet.cluster.worker.replica_watch): end what is left
        of it (a hung process is killed), free its GPUs, and tell the supervisor, which launches
        it again."""
        address = self._replica_pools.pop(replica_key, None)
        self._requests.pop(replica_key, None)
        self._release_gpus(replica_key)
        self._cache.untrack(replica_key)
        if address is not None:
            await self._end_process(replica_key, address, force=True)
        self._unreported[replica_key] = reason
        await self._report_down()

    async def _report_down(self) -> None:
        """Tell the supervisor of the replicas that went down; those it does not hear of now
        (it is restarting, say) are told with a later heartbeat."""
        for replica_key, reason in list(self._unreported.items()):
            try:
                await self._supervisor.call("replica_down", self.address, replica_key, reason)
            except Exception as exc:
                logger.warning("could not tell the supervisor that %s is down (%s); will retry",
                               replica_key, exc)
                return
            self._unreported.pop(replica_key, None)

    async def _running(self) -> list[dict[str, Any]]:
        """The replicas this worker runs, as it joins a supervisor that may have restarted:
        each with its process, GPUs, whether it is loaded (it answers for itself), and the
        launch request it was started with."""
        rows = []
        for key, address in list(self._replica_pools.items()):
            actor_uid = ModelActor.uid_for(key)
            try:
                ref = await within(xo.actor_ref(address=address, uid=actor_uid),
                                   control_call_timeout_s(), f"replica {key}")
                health = await within(ref.health(), control_call_timeout_s(), f"replica {key}")
            except Exception as exc:  # going: the watch reports it
                logger.info("not reporting replica %s: %s", key, exc)
                continue
            replica_uid = key.split(":")[0]
            rows.append({"key": key, "model_uid": replica_uid.rsplit("-", 1)[0],
                         "address": address, "actor_uid": actor_uid, "pid": health["pid"],
                         "state": health["state"], "request": self._requests.get(key, {}),
                         "gpus": self._gpu_owners.gpus_of(key),
                         "gpu_memory_bytes": self._gpu_owners.share_of(key)})
        return rows

    def describe(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "resources": self._resources(),
            "replicas": sorted(key.split(":")[0] for key in self._replica_pools),
            # GPU index -> the replicas on it (several when they share it).
            "gpu_owner": {index: [key.split(":")[0] for key in keys]
                          for index, keys in self._gpu_owners.holders().items()},
        }

    # ---- weights cache (fleet.cluster.weights.cache_inventory) ----

    async def cached_models(self, known: dict[str, dict[str, Any]],
                            model_name: str | None = None) -> list[dict[str, Any]]:
        return await self._cache.list(self.address, known, model_name)

    def cache_probe(self, model_version: str) -> dict[str, Any]:
        return self._cache.probe(model_version)

    async def remove_cache(self, model_version: str, force: bool = False) -> dict[str, Any]:
        return await self._cache.remove(model_version, force)
