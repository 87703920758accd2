"""One model replica, in its own process: resolves the weights, loads the engine, serves calls.

A stateless actor (no per-actor lock), so status and progress answer while a load or a long
request is running; the engine itself is only ever called from one worker thread."""

from __future__ import annotations

import asyncio
import logging
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import xoscar as xo

from fleet.catalogue.registry import parse_family
from fleet.catalogue.schemas import ModelSpec
from fleet.cluster.download import resolve_weights
from fleet.engines.base import EmbeddingResult
from fleet.engines.registry import engine_by_name
from fleet.errors import BadRequest, FleetError, LaunchFailed, Unavailable

logger = logging.getLogger(__name__)


class ModelActor(xo.StatelessActor):
    def __init__(self, replica_uid: str, launch: dict[str, Any]):
        super().__init__()
        self._replica_uid = replica_uid
        self._launch = launch
        self._family = parse_family(launch["model_type"], launch["family"])
        self._spec = ModelSpec.model_validate(launch["spec"])
        self._engine_info = engine_by_name(launch["model_engine"])
        self._engine: Any = None
        # One thread: engines are not assumed to be thread-safe.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._state = "launching"
        self._stage = "starting"
        self._progress = 0.0
        self._error: str | None = None
        self._started_at = time.time()
        self._ready_at: float | None = None
        self._requests_served = 0

    @classmethod
    def uid_for(cls, replica_uid: str) -> str:
        return f"model-{replica_uid}"

    async def __pre_destroy__(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _set_download_progress(self, fraction: float) -> None:
        # Downloading is the first 80% of a launch's progress, loading the rest.
        self._progress = 0.8 * fraction

    def _load_blocking(self) -> None:
        for key, value in (self._launch.get("envs") or {}).items():
            os.environ[str(key)] = str(value)
        self._stage = "resolving weights"
        path = resolve_weights(
            self._family,
            self._spec,
            self._launch["quantization"],
            self._launch.get("model_path"),
            self._set_download_progress,
        )
        self._progress = 0.8
        self._stage = "loading weights"
        engine_class = self._engine_info.load_class()
        engine = engine_class(
            str(path), self._family, self._launch.get("device", "cpu"),
            **(self._launch.get("engine_kwargs") or {}),
        )
        engine.load()
        self._engine = engine

    async def load(self) -> None:
        """Resolve the weights and load the engine; raises LaunchFailed with the real cause."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._load_blocking)
        except FleetError as exc:
            self._fail(exc.message)
            raise
        except BaseException as exc:  # engines raise anything: ImportError, OSError, OOM...
            logger.error("replica %s failed to load:\n%s", self._replica_uid, traceback.format_exc())
            reason = f"{self._engine_info.name} could not load the model: {type(exc).__name__}: {exc}"
            self._fail(reason)
            raise LaunchFailed(reason) from None
        self._state, self._stage, self._progress = "ready", "ready", 1.0
        self._ready_at = time.time()

    def _fail(self, reason: str) -> None:
        self._state, self._stage, self._error = "failed", "failed", reason

    def status(self) -> dict[str, Any]:
        rss = 0
        try:
            import psutil

            rss = psutil.Process().memory_info().rss
        except Exception:
            pass
        return {
            "replica_uid": self._replica_uid,
            "state": self._state,
            "stage": self._stage,
            "progress": round(self._progress, 4),
            "error": self._error,
            "pid": os.getpid(),
            "memory_bytes": rss,
            "uptime_s": round(time.time() - (self._ready_at or self._started_at), 3),
            "requests_served": self._requests_served,
        }

    def _require_ready(self) -> None:
        if self._engine is None:
            raise Unavailable(f"replica {self._replica_uid} is {self._state}, not ready")

    async def embed(self, texts: list[str]) -> tuple[Any, int]:
        """Vectors as a float32 numpy array (sent as one buffer) and the prompt token count."""
        self._require_ready()
        if not hasattr(self._engine, "embed"):
            raise BadRequest(f"model {self._launch['model_uid']} does not serve embeddings")
        loop = asyncio.get_running_loop()
        result: EmbeddingResult = await loop.run_in_executor(
            self._executor, self._engine.embed, texts
        )
        self._requests_served += 1
        return result.vectors, result.prompt_tokens
