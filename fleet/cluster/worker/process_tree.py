"""Processes that an engine starts beside its replica's own: vLLM's engine core and its GPU
workers, for example. When the replica's process ends, they must end too: a replica killed by
the OOM killer, or a cluster stopped while its replicas ran, would otherwise leave them holding
their memory and GPUs, with no parent to stop them. The worker records each replica's
descendants while it runs (fleet.cluster.worker.replica_watch) and ends whatever of them is left once
the replica is gone. A process is named by its pid and its start time, so that a pid the system
has since given to another process is never signalled."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

logger = logging.getLogger(__name__)

END_GRACE_S = 5.0


@dataclass(frozen=True)
class Spawned:
    pid: int
    started: float  # psutil's create_time


def spawned_by_each(roots: dict[str, int | None]) -> dict[str, set[Spawned]]:
    """Each root process's live descendants, from one read of the process table (a replica's
    `children(recursive=True)` reads all of it too, once per replica)."""
    children: dict[int, list[psutil.Process]] = {}
    for process in psutil.process_iter(["ppid", "create_time"]):
        ppid = process.info["ppid"]
        if ppid is not None and process.info["create_time"] is not None:
            children.setdefault(ppid, []).append(process)
    found: dict[str, set[Spawned]] = {}
    for key, root in roots.items():
        below: set[Spawned] = set()
        stack = list(children.get(root, [])) if root is not None else []
        while stack:
            process = stack.pop()
            below.add(Spawned(process.pid, process.info["create_time"]))
            stack.extend(children.get(process.pid, []))
        found[key] = below
    return found


def spawned_by(pid: int | None) -> set[Spawned]:
    """Every live descendant of process `pid` (none when it is gone)."""
    return spawned_by_each({"": pid})[""]


def _still_running(spawned: Spawned) -> psutil.Process | None:
    try:
        process = psutil.Process(spawned.pid)
        if (process.create_time() == spawned.started and process.is_running()
                and process.status() != psutil.STATUS_ZOMBIE):  # killed, not reaped yet
            return process
    except psutil.Error:
        pass
    return None


def end_all(processes: set[Spawned], grace_s: float = END_GRACE_S) -> int:
    """SIGTERM to those still running (they may clean up), SIGKILL to those that are left after
    `grace_s`; returns how many were still running. Blocking: call it off the event loop."""
    alive = [p for p in (_still_running(s) for s in processes) if p is not None]
    for process in alive:
        try:
            process.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for process in left:
        try:
            process.kill()
        except psutil.Error:
            pass
    if alive:
        logger.info("ended %d process(es) a replica left behind: %s", len(alive),
                    ", ".join(str(p.pid) for p in alive))
    return len(alive)
