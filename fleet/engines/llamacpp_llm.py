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
go through the server's local HTTP listener.

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
- `poll`, how busily idle threads wait for work (0-100), default 0."""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar, Literal

from fleet.catalogue.schemas import LLMFamily
from fleet.engines.base import ReadsNoImages, SelfSchedulingLLMEngine, checked_options
from fleet.engines.launch_options import LlamaCppLLMOptions
from fleet.engines.llamacpp_server import (
    LlamaServer,
    capped_by_training,
    engine_options,
    file_metadata,
)
from fleet.generation.scheduling import Scheduler

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

    # ---- loading -----------------------------------------------------------------------
    def load(self) -> None:
        if not os.path.isfile(self._model_path):
            raise FileNotFoundError(f"{self._model_path} is not a GGUF file")
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
        logger.info("llama.cpp serves %s: %d slots sharing %d tokens, %d threads, %d GPU layers",
                    self._model_path, self.n_parallel, self.context_length,
                    self._options["threads"], self._options["gpu_layers"])

    def _start(self, context: int) -> None:
        self._llama = LlamaServer.start(self._model_path, n_parallel=self.n_parallel,
                                        context=context, **self._options)
        self.server = self._llama.server

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None
        self.server = None

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


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[SelfSchedulingLLMEngine] = LlamaCppLLM
