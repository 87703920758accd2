"""In each worker: notices a replica whose process has exited, or that no longer answers.

Two checks, each cheap:
- every `process_watch_interval_s` (0.5 s) the exit status of each replica's process is read
  (a non-blocking `waitpid` through xoscar's process handle): an exit (the OOM killer, a
  segfault, kill -9) is seen within half a second, and a process stopped by a signal (SIGSTOP)
  on two checks in a row is hung;
- every `health_probe_interval_s` (1 s) each replica is asked `health()`, with
  `health_probe_timeout_s` (3 s) to answer. The replica answers from its event loop, not from
  its engine's thread, so a busy engine still answers; a stopped or deadlocked process does not.
  A ready replica is hung when it misses `health_probe_misses` (2) probes in a row; one that has
  not answered as ready yet (it is loading) only after `loading_hang_s` (30 s) of silence, unless
  its process is stopped by a signal: on a machine whose cores are all taken, a process loading
  a model can go seconds without answering, and killing it there failed launches that would
  have succeeded.

What to do about it is the worker's business (`on_down(key, reason)`): it ends the process and
tells the supervisor, which launches the replica again.

Why here and not xoscar's auto-recover: xoscar restarts a dead sub-pool at the same address and
creates its actors again, but nothing loads the model, so the replica answered 503 forever while
everyone believed it ready. Fleet's pools run with auto-recover off, and this watch reports."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import psutil
import xoscar as xo
from xoscar.errors import ActorNotExist

from fleet.cluster.deadlines import DeadlineExceeded, within
from fleet.cluster.worker.process_tree import Spawned, spawned_by_each
from fleet.settings import (
    health_probe_interval_s,
    health_probe_misses,
    health_probe_timeout_s,
    loading_hang_s,
    process_watch_interval_s,
)

logger = logging.getLogger(__name__)

OnDown = Callable[[str, str], Awaitable[None]]


@dataclass
class _Watched:
    address: str
    actor_uid: str
    ref: Any = None
    probing: bool = False
    ready: bool = False  # it has answered a probe as ready
    silent_since: float | None = None  # when the first probe of the current run of misses began
    misses: int = 0
    stopped_checks: int = 0  # process checks in a row that found it stopped by a signal

    def hung(self, now: float, stopped: bool = False) -> bool:
        """`stopped`: its process is stopped by a signal (SIGSTOP, a debugger), which no load
        explains: the ready replica's rule holds for it at once."""
        if self.ready or stopped:
            return self.misses >= health_probe_misses()
        return self.silent_since is not None and now - self.silent_since >= loading_hang_s()


def exit_reason(pid: int | None, returncode: int) -> str:
    """`process 1234 was killed by signal 9 (SIGKILL)` or `process 1234 exited with code 1`."""
    who = f"process {pid}" if pid else "its process"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        hint = " (the OOM killer, or someone, killed it)" if -returncode == signal.SIGKILL else ""
        return f"{who} was killed by signal {-returncode} ({name}){hint}"
    return f"{who} exited with code {returncode}"


def _stopped(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


class ReplicaWatch:
    def __init__(self, pool: Any, on_down: OnDown):
        self._pool = pool
        self._on_down = on_down
        self._watched: dict[str, _Watched] = {}
        # Each replica's descendants, as last seen: what to end once it is gone (process_tree).
        self._spawned: dict[str, set[Spawned]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def watch(self, key: str, address: str, actor_uid: str) -> None:
        self._watched[key] = _Watched(address, actor_uid)

    def forget(self, key: str) -> None:
        self._watched.pop(key, None)

    def take_spawned(self, key: str) -> set[Spawned]:
        """The processes replica `key` was last seen to have started, forgotten here: the
        caller ends them with it."""
        return self._spawned.pop(key, set())

    def _pool_stopping(self) -> bool:
        # xoscar sets this before it ends the sub-pools: those exits are the pool's own doing.
        stopped = getattr(self._pool, "_stopped", None)
        return stopped is not None and stopped.is_set()

    def pid(self, address: str) -> int | None:
        process = self._pool.sub_processes.get(address)
        return getattr(process, "pid", None)

    async def _run(self) -> None:
        next_probe = time.monotonic()
        while True:
            await asyncio.sleep(process_watch_interval_s())
            if self._pool_stopping():
                return
            try:
                self._check_exits()
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + health_probe_interval_s()
                    self._record_spawned()
                    for key, watched in list(self._watched.items()):
                        if not watched.probing:
                            watched.probing = True
                            asyncio.create_task(self._probe(key, watched))
            except Exception:  # the watch must outlive any one bad check
                logger.exception("replica watch failed a round")

    def _record_spawned(self) -> None:
        seen = spawned_by_each({key: self.pid(watched.address)
                                for key, watched in self._watched.items()})
        for key, processes in seen.items():
            if processes:
                # Added to, not replaced: one that has just ended is skipped when ending them.
                self._spawned[key] = self._spawned.get(key, set()) | processes

    def _check_exits(self) -> None:
        for key, watched in list(self._watched.items()):
            process = self._pool.sub_processes.get(watched.address)
            if process is None:
                continue
            returncode = process.returncode
            if returncode is not None:
                self._report(key, exit_reason(getattr(process, "pid", None), returncode))
                continue
            # A process stopped by a signal (SIGSTOP, a debugger) answers nothing until it is
            # continued: seen on two checks in a row, it is hung without waiting for probes.
            pid = getattr(process, "pid", None)
            watched.stopped_checks = watched.stopped_checks + 1 if _stopped(pid) else 0
            if watched.stopped_checks >= 2:
                self._report(key, f"process {pid} is stopped by a signal and did not answer a "
                                  "health check (hung)")

    async def _probe(self, key: str, watched: _Watched) -> None:
        started = time.monotonic()
        try:
            if watched.ref is None:
                watched.ref = await within(
                    xo.actor_ref(address=watched.address, uid=watched.actor_uid),
                    health_probe_timeout_s(), "the replica")
            answer = await within(watched.ref.health(), health_probe_timeout_s(), "the replica")
            watched.misses, watched.silent_since = 0, None
            watched.ready = watched.ready or (isinstance(answer, dict)
                                              and answer.get("state") == "ready")
        except DeadlineExceeded:
            watched.misses += 1
            watched.silent_since = watched.silent_since or started
            process = self._pool.sub_processes.get(watched.address)
            pid = getattr(process, "pid", None)
            if (process is not None and process.returncode is None
                    and watched.hung(time.monotonic(), _stopped(pid))):
                silent = time.monotonic() - watched.silent_since
                self._report(key, f"process {getattr(process, 'pid', '?')} did not answer a "
                                  f"health check for {silent:.0f} s ({watched.misses} probes of "
                                  f"{health_probe_timeout_s():g} s; hung)")
        except ActorNotExist:
            pass  # still being created
        except Exception as exc:  # its process is going: the exit check says how
            logger.debug("health probe of %s: %r", key, exc)
        finally:
            watched.probing = False

    def _report(self, key: str, reason: str) -> None:
        if self._watched.pop(key, None) is None or self._pool_stopping():
            return  # reported already, or the worker is stopping
        logger.error("replica %s is down: %s", key.split(":")[0], reason)
        task = asyncio.create_task(self._on_down(key, reason))
        _REPORTING.add(task)
        task.add_done_callback(_REPORTING.discard)


_REPORTING: set[asyncio.Task] = set()
