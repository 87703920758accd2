"""GGUF chat and completion models on llama.cpp, through xllamacpp: llama.cpp's own server, run
inside the model's process (no separate server process to start, watch and stop).

Why llama.cpp's server and not a bare llama context: its parallel slots are continuous batching
done by llama.cpp (running sequences are decoded together, and join or leave between steps), with
its sampling, stop strings, prompt cache and logprobs. Fleet keeps what must not depend on the
engine: the chat template (rendered by fleet.generation.chat_template, as for every engine), the
request checks, and the OpenAI output (tool calls, reasoning). Prompts go to llama.cpp as token ids
from llama.cpp's own tokenizer, so `usage` is exact and the context checks are the model's.
fleet.engines.llamacpp_scheduler hands the requests to the slots. Completions are direct calls
into the binding; only tokenization and the model's metadata, which the binding does not expose,
go through the server's local HTTP listener, and, for a model loaded with a vision projector,
its completions too (fleet.engines.llamacpp_vision: only that route takes images).

Why xllamacpp and not llama-cpp-python (measured by bench/llamacpp_bindings.py; the figures are
in docs/benchmarks.md): one stream runs at about the same speed on both, but a `Llama` holds one
sequence, so concurrent streams take turns there, with far less throughput and a long wait for the
first token, where xllamacpp's slots decode them together. xllamacpp also installs as a prebuilt
wheel, where llama-cpp-python builds from source (minutes; its native build crashed at the first
decode on the development machine's CPU, and a portable AVX2 build had to be asked for).

Launch options (fleet.engines.launch_options.LlamaCppLLMOptions):
- `n_parallel` (or `max_num_seqs`), default 16: slots, sequences decoded together;
- `context_length` (or `n_ctx`): the tokens of KV cache, one pool that all slots share (llama.cpp's
  unified cache), so one request may use all of it and many short ones fit together; default: the
  family's context length, capped by the model's;
- `n_threads`, default: the cores this process may run on (physical ones);
- `n_gpu_layers`, default: all of them on a CUDA launch, else 0;
- `poll`, how busily idle threads wait for work (0-100), default 0;
- `multimodal_projector`: the vision projector (mmproj GGUF) that lets the model read images
  (fleet.engines.llamacpp_vision), a local file by the time the engine starts
  (fleet.cluster.weights.projector); `image_min_tokens`/`image_max_tokens` bound the tokens an
  image becomes where the projector sizes images."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from fleet.catalogue.schemas import LLMFamily
from fleet.engines.base import (
    ImagePrompt,
    ReadsNoImages,
    SelfSchedulingLLMEngine,
    checked_options,
)
from fleet.engines.launch_options import LlamaCppLLMOptions
from fleet.engines.llamacpp_server import (
    CompletionCall,
    LlamaCppRefusal,
    LlamaServer,
    Projector,
    capped_by_training,
    engine_options,
    file_metadata,
)
from fleet.engines.llamacpp_vision import ImageReader
from fleet.generation.scheduling import Scheduler
from fleet.gguf_metadata import read_gguf_metadata

logger = logging.getLogger(__name__)

# Slots. With one shared cache, slots cost no memory of their own, only a little compute per
# step; measured here with SmolLM2 Q4_1 at 16 concurrent streams: 4 slots gave 160 tok/s and a
# 4.7 s time to first token (12 requests queue), 16 slots 213 tok/s and 0.14 s.
DEFAULT_PARALLEL = 16
MAX_PARALLEL = 256


class LlamaCppLLM(ReadsNoImages):
    scheduling: ClassVar[Literal["engine"]] = "engine"  # its own slots, see make_scheduler

    def __init__(self, model_path: str, family: LLMFamily, device: str | None,
                 options: LlamaCppLLMOptions | None = None):
        options = checked_options(options, LlamaCppLLMOptions)
        self._model_path = model_path
        self.n_parallel = options.n_parallel or options.max_num_seqs or DEFAULT_PARALLEL
        if not 1 <= self.n_parallel <= MAX_PARALLEL:
            # llama.cpp allocates per-slot state at start; a runaway number takes the process down.
            raise ValueError(f"n_parallel={self.n_parallel}: llama.cpp runs 1 to {MAX_PARALLEL} slots")
        self._options = engine_options(options, device)
        # The shared cache: the launch's context_length (or n_ctx), else the family's (capped at
        # load by the model's own when the launch named neither).
        launch_context = options.context_length or options.n_ctx
        self._sized_by_launch = bool(launch_context)
        self.context_length = launch_context or family.context_length
        self.vocab_size = 0
        self.server: Any = None
        self._llama: LlamaServer | None = None
        self._props: dict[str, Any] = {}
        self._projector = (Projector(options.multimodal_projector, options.image_min_tokens,
                                     options.image_max_tokens)
                           if options.multimodal_projector else None)
        self._images: ImageReader | None = None
        # The scheduler's completion call (fleet.engines.llamacpp_scheduler), set at load.
        self.completions: CompletionCall | None = None

    # ---- loading -----------------------------------------------------------------------
    def load(self) -> None:
        if not os.path.isfile(self._model_path):
            raise FileNotFoundError(f"{self._model_path} is not a GGUF file")
        if self._projector is not None:
            check_projector(self._projector.path)
        if not self._sized_by_launch:
            self.context_length = capped_by_training(self._model_path,
                                                     file_metadata(self._model_path),
                                                     self.context_length)
        self._start(self.context_length)
        try:
            self._configure()
        except BaseException:
            self.close()  # a failed launch leaves no server behind
            raise

    def _configure(self) -> None:
        meta = self._get("/v1/models")["data"][0]["meta"]
        self.vocab_size = int(meta["n_vocab"])
        self._props = self._get("/props")
        llama = self._running
        if self._projector is None:
            self.completions = llama.server.handle_completions
        else:
            # With a projector, only llama.cpp's own route takes images (and token ids).
            self.completions = llama.stream_completion
            try:
                self._images = ImageReader(llama, llama.tokenize, self._props["media_marker"],
                                           self._props.get("bos_token") or "")
            except (LlamaCppRefusal, KeyError) as exc:
                raise RuntimeError(f"this llama.cpp (xllamacpp) cannot count an image's tokens "
                                   f"before it runs ({exc}); images need xllamacpp 2026.10 or "
                                   "later") from None
            self.reads_images, self.image_marker = True, self._images.marker
        logger.info("llama.cpp serves %s: %d slots sharing %d tokens, %d threads, %d GPU layers",
                    self._model_path, self.n_parallel, self.context_length,
                    self._options["threads"], self._options["gpu_layers"])

    def _start(self, context: int) -> None:
        try:
            self._llama = LlamaServer.start(self._model_path, n_parallel=self.n_parallel,
                                            context=context, projector=self._projector,
                                            **self._options)
        except RuntimeError as exc:
            if self._projector is not None and _PROJECTOR_WORDS.search(str(exc)):
                raise RuntimeError(f"the multimodal projector {self._projector.path} failed "
                                   f"to load with this model: {exc}") from None
            raise
        self.server = self._llama.server

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
        self.server = self.completions = self._images = None
        self.reads_images, self.image_marker = False, None

    @property
    def _running(self) -> LlamaServer:
        if self._llama is None:
            raise RuntimeError("llama.cpp is not running: load() the model first")
        return self._llama

    def _get(self, path: str) -> Any:
        return self._running.get(path)

    # ---- prompt side (see fleet.engines.base.BaseLLMEngine) -----------------------------
    @property
    def chat_template(self) -> str | dict[str, str] | None:
        """The GGUF file's template, as llama.cpp reads it (ChatML when the file has none)."""
        default = self._props.get("chat_template") or None
        tool_use = self._props.get("chat_template_tool_use")
        if default and tool_use:
            return {"default": default, "tool_use": tool_use}
        return default

    @property
    def template_tokens(self) -> dict[str, str]:
        return {name: self._props[name] for name in ("bos_token", "eos_token") if self._props.get(name)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """llama.cpp's own tokenization, the one its completions would do: special tokens written
        in the text are read as such, and bos is added only when asked and the model wants it."""
        return self._running.tokenize(text, add_special_tokens)

    def encode_with_images(self, text: str, images: list[bytes]) -> ImagePrompt:
        if self._images is None:
            return super().encode_with_images(text, images)  # refuses: no projector
        return self._images.read(text, images)

    def stop_token_ids(self, family_stops: list[str], family_stop_ids: list[int]) -> tuple[int, ...]:
        # llama.cpp ends a sequence by itself on every end-of-generation token of the vocabulary
        # (eos, eot, <|im_end|>, <end_of_turn>...): nothing to add. A request's own
        # stop_token_ids still reach the scheduler in its sampling settings.
        return ()

    # ---- generation --------------------------------------------------------------------
    def make_scheduler(self, max_running: int, max_requests: int) -> Scheduler:
        from fleet.engines.llamacpp_scheduler import LlamaCppScheduler

        return LlamaCppScheduler(self, slots=min(max_running, self.n_parallel),
                                 max_requests=max_requests)


# llama.cpp's words when a projector fails to load (mtmd, its CLIP loader, its file).
_PROJECTOR_WORDS = re.compile(r"mtmd|clip|mmproj|multimodal", re.IGNORECASE)


def check_projector(path: str) -> None:
    """A readable GGUF file of llama.cpp's projector kind, with an image encoder: said in one
    line before llama.cpp starts, rather than in its log."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the multimodal projector {path} is not a file")
    try:
        meta = read_gguf_metadata(Path(path))
    except (OSError, ValueError) as exc:
        raise ValueError(f"the multimodal projector {path} is not a readable GGUF file: "
                         f"{exc}") from None
    kind = meta.get("general.architecture")
    if kind != "clip":
        raise ValueError(f"{path} is not a multimodal projector: its GGUF architecture is "
                         f"{kind!r}, not 'clip' (an mmproj file)")
    if not meta.get("clip.has_vision_encoder"):
        raise ValueError(f"the multimodal projector {path} has no image encoder (audio only?)")


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[SelfSchedulingLLMEngine] = LlamaCppLLM
