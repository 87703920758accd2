"""One model replica, in its own process: resolves the weights, loads the engine, serves calls.

A stateless actor (no per-actor lock), so status and progress answer while a load or a long
request is running; the engine itself is only ever called from one worker thread."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, cast

import xoscar as xo

from fleet.admission import RequestLimits
from fleet.catalogue.schemas import BaseFamily, LLMFamily
from fleet.channel.replica_end import CHANNEL_PORT_ENV, ReplicaChannelServer
from fleet.cluster.replica.services.embedding import EmbeddingService
from fleet.cluster.replica.services.llm import LLMService
from fleet.cluster.weights.download import resolve_weights
from fleet.cluster.weights.projector import with_projector
from fleet.engines.base import (
    EmbeddingEngine,
    EmbeddingInput,
    ImageEngine,
    LLMEngine,
    OCREngine,
    RerankEngine,
    SpeechEngine,
    TranscriptionEngine,
)
from fleet.engines.launch_options import LaunchOptions, LLMOptions
from fleet.engines.registry import engine_by_name
from fleet.errors import BadRequest, FleetError, LaunchFailed, Unavailable
from fleet.messages import (
    GenerationCall,
    GenerationResult,
    ReplicaLaunch,
    StreamFrame,
    StreamStarted,
)

logger = logging.getLogger(__name__)

# Requests that the API may send in groups (ModelActor.call_many).
_GROUPABLE = frozenset({"embed", "rerank"})
# Model types served by a service built on the loaded engine: it owns the type's requests and
# batching, and names the methods the API may call (`METHODS`, through `call_service`) and
# stream (`STREAMS`, through `stream_service`). See ReplicaService. The first row whose model
# type matches, and whose ability the family has (None: any), gives the "module:Class".
_SERVICES: tuple[tuple[str, str | None, str], ...] = (
    ("image", "ocr", "fleet.cluster.replica.services.ocr:OCRService"),
    ("image", None, "fleet.cluster.replica.services.image:ImageService"),
    ("audio", "text2audio", "fleet.cluster.replica.services.speech:SpeechService"),
    ("audio", None, "fleet.cluster.replica.services.transcription:TranscriptionService"),
)
_SERVICE_TYPES = frozenset(model_type for model_type, _, _ in _SERVICES)


# Whichever engine the replica's model type loads (fleet.engines.registry names the class).
Engine = (EmbeddingEngine | RerankEngine | LLMEngine | ImageEngine | OCREngine
          | TranscriptionEngine | SpeechEngine)


def _service_class(family: BaseFamily) -> type[ReplicaService]:
    for model_type, ability, target in _SERVICES:
        if family.model_type == model_type and (ability is None or ability in family.abilities):
            module_name, class_name = target.split(":")
            return getattr(importlib.import_module(module_name), class_name)
    raise LookupError(f"no service serves {family.model_type} models")


class ReplicaService(Protocol):
    """What a model type's service gives its replica (fleet.cluster.replica.services.image is one)."""

    METHODS: frozenset[str]
    STREAMS: frozenset[str]

    def __init__(self, engine: Any, family: BaseFamily, model_uid: str, options: LaunchOptions,
                 executor: ThreadPoolExecutor, limits: RequestLimits = ...): ...

    @property
    def in_progress(self) -> int: ...

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def _portable(error: BaseException) -> FleetError:
    """An error that crosses back to the API whatever it was (any engine exception may not
    pickle); Fleet's own errors keep their HTTP meaning."""
    if isinstance(error, FleetError):
        return error
    logger.error("request failed: %s: %s", type(error).__name__, error)
    return FleetError(f"{type(error).__name__}: {error}")


class ModelActor(xo.StatelessActor):
    def __init__(self, replica_uid: str, launch: ReplicaLaunch):
        super().__init__()
        self._replica_uid = replica_uid
        self._launch = launch
        self._model_uid = launch.model_uid
        self._family = launch.family
        # Read here, once, and handed typed to whatever serves the requests.
        self._limits = RequestLimits.of(launch.request_limits)
        self._engine_info = engine_by_name(launch.model_engine)
        self._engine: Engine | None = None
        # One thread: engines are not assumed to be thread-safe.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._state = "launching"
        self._stage = "starting"
        self._progress = 0.0
        self._error: str | None = None
        self._started_at = time.time()
        self._ready_at: float | None = None
        self._requests_served = 0
        # LLMs batch token by token, in their service's scheduler, and the other modalities in
        # their services (fleet.cluster.replica.services), all created once the engine is loaded;
        # embeddings and rerank are batched by the embedding service, which is there from the
        # start (its statistics are the replica's while it loads).
        self._llm: LLMService | None = None
        self._service: ReplicaService | None = None
        self._embedding = EmbeddingService(self._family, self._model_uid, self._executor,
                                           self._limits)
        # The API's channel: streamed tokens and grouped calls (fleet.channel.replica_end).
        self._channel_server = ReplicaChannelServer(self._channel_lost, self.call_many)

    @classmethod
    def uid_for(cls, replica_uid: str) -> str:
        return f"model-{replica_uid}"

    async def __pre_destroy__(self) -> None:
        self._channel_server.close()
        if self._llm is not None:
            self._llm.close()
        if self._service is not None:
            self._service.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _set_download_progress(self, fraction: float) -> None:
        # Downloading is the first 80% of a launch's progress, loading the rest.
        self._stage = "downloading weights"
        self._progress = 0.8 * fraction

    def _load_blocking(self) -> None:
        launch = self._launch
        os.environ.update(launch.envs)
        self._stage = "resolving weights"
        path = resolve_weights(self._family, launch.spec, launch.quantization, launch.model_path,
                               self._set_download_progress)
        options = with_projector(self._family, launch.spec, launch.quantization,
                                 launch.model_path, launch.engine_options,
                                 self._set_download_progress)
        self._progress = 0.8
        self._stage = "loading weights"
        engine_class = self._engine_info.load_class(self._family.model_type)
        engine: Engine = engine_class(str(path), self._family, launch.device, options)
        engine.load()
        self._engine = engine
        if self._family.model_type in ("embedding", "rerank"):
            # The registry gives embedding and rerank models an engine of that protocol.
            self._embedding.engine = cast(EmbeddingEngine | RerankEngine, engine)

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
        options = self._launch.engine_options
        if isinstance(self._family, LLMFamily) and isinstance(options, LLMOptions):
            self._llm = LLMService(cast(LLMEngine, self._engine), self._family, self._model_uid,
                                   options, self._executor, self._channel_server, self._limits)
        elif self._family.model_type in _SERVICE_TYPES:
            self._service = _service_class(self._family)(self._engine, self._family,
                                                         self._model_uid, options,
                                                         self._executor, self._limits)
        # The port the worker gave this process for its channel (--replica-ports), else a free one.
        await self._channel_server.start(self.address.rsplit(":", 1)[0],
                                         int(os.environ.get(CHANNEL_PORT_ENV, "0")))
        self._state, self._stage, self._progress = "ready", "ready", 1.0
        self._ready_at = time.time()

    def _channel_lost(self, channel: str) -> None:
        if self._llm is not None:
            self._llm.channel_lost(channel)

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
            "batch": self._batch_stats(),
        }

    def health(self) -> dict[str, Any]:
        """The worker's liveness probe (fleet.cluster.worker.replica_watch): answered from the event
        loop, so a replica whose engine is busy answers, and a hung process does not."""
        return {"state": self._state, "pid": os.getpid()}

    def activity(self) -> tuple[int, int]:
        """(requests served so far, requests in progress): the supervisor unloads a model whose
        counts have not moved for its keep_alive (fleet.cluster.supervisor.elastic)."""
        return self._requests_served, self.in_progress()

    def in_progress(self) -> int:
        """Requests being answered now: a replica being removed finishes them first (drain)."""
        if self._llm is not None:
            return self._llm.in_progress
        if self._service is not None:
            return self._service.in_progress
        return self._embedding.batcher.in_progress

    def _batch_stats(self) -> dict[str, int]:
        if self._llm is not None:
            stats = self._llm.stats()
        elif self._service is not None:
            stats = self._service.stats()
        else:
            stats = self._embedding.batcher.stats()
        # Backlog: bytes queued for API readers slower than the replica (fleet.channel.sender).
        return {**stats, "api_channels": self._channel_server.channels,
                "api_channel_backlog_bytes": self._channel_server.backlog_bytes}

    def _require_ready(self, ability: str) -> None:
        if self._engine is None:
            raise Unavailable(f"replica {self._replica_uid} is {self._state}, not ready")
        if ability not in self._family.abilities:
            raise BadRequest(
                f"model {self._model_uid} is a {self._family.model_type} model and "
                f"does not serve {ability} requests"
            )

    async def embed(
        self, inputs: list[EmbeddingInput], truncate: bool = True, dimensions: int | None = None
    ) -> tuple[Any, int]:
        """Vectors as one float32 numpy array (sent as a buffer) and the prompt token count."""
        self._require_ready("embed")
        answer = await self._embedding.embed(inputs, truncate, dimensions)
        self._requests_served += 1
        return answer

    async def rerank(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """A relevance score per document, and the tokens read."""
        self._require_ready("rerank")
        answer = await self._embedding.rerank(query, documents)
        self._requests_served += 1
        return answer

    async def call_many(self, method: str,
                        calls: list[tuple]) -> list[tuple[FleetError | None, Any]]:
        """Several requests of one kind in one actor message (the API groups those that arrive
        together, see fleet.api.routing): each gets its own answer or its own error."""
        if method not in _GROUPABLE:
            raise BadRequest(f"{method} calls cannot be grouped")
        outcomes = await asyncio.gather(*(getattr(self, method)(*args) for args in calls),
                                        return_exceptions=True)
        return [(_portable(o), None) if isinstance(o, BaseException) else (None, o)
                for o in outcomes]

    # ---- chat and completions ----------------------------------------------------------
    def _require_llm(self, kind: str) -> LLMService:
        if self._family.model_type != "LLM":
            endpoint = "chat completions" if kind == "chat" else "completions"
            raise BadRequest(f"model {self._model_uid} is a {self._family.model_type} "
                             f"model and does not serve {endpoint}")
        return self._require_ready_llm()

    def _require_ready_llm(self) -> LLMService:
        if self._llm is None:
            raise Unavailable(f"replica {self._replica_uid} is {self._state}, not ready")
        return self._llm

    async def generate(self, call: GenerationCall) -> GenerationResult:
        """A whole chat or completion answer: choices and usage."""
        result = await self._require_llm(call.kind).complete(call)
        self._requests_served += 1
        return result

    async def count_tokens(self, call: GenerationCall) -> int:
        """The prompt tokens that `generate(call)` would read (Anthropic's count_tokens)."""
        count = await self._require_llm(call.kind).count_tokens(call)
        self._requests_served += 1  # a use of the model, which keeps it loaded (keep_alive)
        return count

    def channel_address(self) -> str | None:
        """Where the API connects for streamed tokens and grouped calls
        (fleet.channel.replica_end); None until the replica is ready."""
        return self._channel_server.address or None

    async def start_stream(self, call: GenerationCall,
                           push: tuple[str, str] | None = None) -> StreamStarted:
        """Start a streamed answer: pushed to the API's replica channel `push` = (channel, stream
        id), or polled with `next_chunks(stream_id)`."""
        started = await self._require_llm(call.kind).start(call, push)
        self._requests_served += 1
        return started

    async def next_chunks(self, stream_id: str) -> StreamFrame:
        return await self._require_ready_llm().next_chunks(stream_id)

    def cancel_stream(self, stream_id: str) -> None:
        if self._llm is not None:
            self._llm.cancel(stream_id)

    # ---- model types with a service (images, audio) -----------------------------------
    def _require_service(self, method: str, streams: bool) -> ReplicaService:
        if self._family.model_type not in _SERVICE_TYPES:
            raise BadRequest(f"model {self._model_uid} is a {self._family.model_type} "
                             f"model and does not serve {method} requests")
        if self._service is None:
            raise Unavailable(f"replica {self._replica_uid} is {self._state}, not ready")
        allowed = self._service.STREAMS if streams else self._service.METHODS
        if method not in allowed:
            raise BadRequest(f"model {self._model_uid} is a {self._family.model_type} "
                             f"model and does not serve {method} requests")
        return self._service

    async def call_service(self, method: str, *args: Any) -> Any:
        """One request to the model type's service (its `METHODS`)."""
        result = await getattr(self._require_service(method, streams=False), method)(*args)
        self._requests_served += 1
        return result

    @xo.generator
    async def stream_service(self, method: str, *args: Any) -> AsyncIterator[Any]:
        """A streamed request to the model type's service (its `STREAMS`, async generators)."""
        service = self._require_service(method, streams=True)
        self._requests_served += 1
        async for item in getattr(service, method)(*args):
            yield item
