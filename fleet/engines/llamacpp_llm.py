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

Why xllamacpp and not llama-cpp-python (bench/llamacpp_bindings.py, SmolLM2 Q4_1 on 2 cores,
alternating windows, each binding in its own process): one stream runs at the same speed on both
(llama-cpp-python 0.95 of xllamacpp: 89.6 against 94.0 tok/s), but a `Llama` holds one sequence,
so 8 streams take turns there: 93 tok/s and 4.6 s to the first token, against 181 tok/s and
0.2 s on xllamacpp's slots. xllamacpp also installs as a prebuilt wheel, where llama-cpp-python
builds from source (about 7 minutes here; its native build crashed at the first decode on this
CPU, and the portable AVX2 build measured above had to be asked for).

Launch options (engine kwargs):
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
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fleet.catalogue.schemas import BaseFamily
from fleet.gguf_metadata import trained_context

logger = logging.getLogger(__name__)

# Slots. With one shared cache, slots cost no memory of their own, only a little compute per
# step; measured here with SmolLM2 Q4_1 at 16 concurrent streams: 4 slots gave 160 tok/s and a
# 4.7 s time to first token (12 requests queue), 16 slots 213 tok/s and 0.14 s.
DEFAULT_PARALLEL = 16
MAX_PARALLEL = 256
ALL_LAYERS = 999  # llama.cpp's way to say "every layer on the GPU"
# How hard llama.cpp's threads spin waiting for work (0-100; llama.cpp's default is 50). Measured
# here on 2 shared cores, SmolLM2 Q4_1 decode: 50 and 0 both ~110 tok/s on idle cores, but with
# other processes busy 50 fell to 9-30 tok/s while 0 kept ~110. A worker runs several replicas.
DEFAULT_POLL = 0
# llama.cpp's log level threshold: 1 prints errors only. Its info lines (a few dozen per load)
# would drown the worker's log.
LOG_ERRORS_ONLY = 1
# "0.00.003.073 E gguf_init_from_reader: invalid magic ..." (time, level, message)
_LOG_ERROR = re.compile(r"^\s*[\d.]+\s+E\s+(?:\w{3}\s+)?(.*\S)\s*$")


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which containers narrow), counting
    physical cores only when fewer: llama.cpp's decode does not gain from hyperthreads."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    import psutil

    physical = psutil.cpu_count(logical=False) or usable
    return max(1, min(usable, physical))


@contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """What the process writes to stderr (fd 2) meanwhile, readable inside the block.

    llama.cpp reports why a model failed to load only in its log, written from C++ to fd 2; the
    binding's exception just says "Failed to init server". What was captured is written back to
    stderr at the end, so the logs lose nothing."""
    sys.stderr.flush()
    saved = os.dup(2)
    # Append mode: writers always add at the end, whatever position reading leaves.
    with tempfile.TemporaryFile(mode="a+b") as sink:
        os.dup2(sink.fileno(), 2)

        def read() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", errors="replace")

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured = read()
            if captured:
                sys.stderr.write(captured)
                sys.stderr.flush()


def _load_error(read: Callable[[], str], exc: Exception, wait_s: float = 1.0) -> str:
    """llama.cpp's own words for a failed load: its first error lines, on one line."""
    deadline = time.monotonic() + wait_s
    while True:  # llama.cpp logs from a thread of its own: give it a moment to write
        errors = [m.group(1) for m in map(_LOG_ERROR.match, read().splitlines()) if m]
        if errors or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    distinct = list(dict.fromkeys(errors))[:2]
    text = "; ".join(distinct) if distinct else str(exc)
    return "".join(c if c.isprintable() else "?" for c in text)


class LlamaCppLLM:
    def __init__(self, model_path: str, family: BaseFamily, device: str | None, **kwargs: Any):
        self._model_path = model_path
        self._on_gpu = (device or "").startswith("cuda")
        self.n_parallel = int(kwargs.get("n_parallel") or kwargs.get("max_num_seqs") or DEFAULT_PARALLEL)
        if not 1 <= self.n_parallel <= MAX_PARALLEL:
            # llama.cpp allocates per-slot state at start; a runaway number takes the process down.
            raise ValueError(f"n_parallel={self.n_parallel}: llama.cpp runs 1 to {MAX_PARALLEL} slots")
        self._n_threads = int(kwargs.get("n_threads") or 0) or usable_cores()
        self._poll = int(kwargs.get("poll", DEFAULT_POLL))
        gpu_layers = kwargs.get("n_gpu_layers")
        self._n_gpu_layers = int(gpu_layers) if gpu_layers is not None else (
            ALL_LAYERS if self._on_gpu else 0)
        # The shared cache: the launch's context_length (or n_ctx), else the family's (capped at
        # load by the model's own when the launch named neither).
        launch_context = kwargs.get("context_length") or kwargs.get("n_ctx")
        self._sized_by_launch = bool(launch_context)
        self.context_length = int(launch_context or getattr(family, "context_length", 2048))
        self.vocab_size = 0
        self.server: Any = None
        self._http: Any = None
        self._props: dict[str, Any] = {}

    # ---- loading -----------------------------------------------------------------------
    def load(self) -> None:
        if not os.path.isfile(self._model_path):
            raise FileNotFoundError(f"{self._model_path} is not a GGUF file")
        if not self._sized_by_launch:
            self.context_length = self._capped_by_training(self.context_length)
        self._start(self.context_length)
        try:
            self._configure()
        except BaseException:
            self.close()  # a failed launch leaves no server behind
            raise

    def _capped_by_training(self, context: int) -> int:
        """The family may allow more context than this file's model was trained for: a cache
        that size would hold context no request may use. Read from the file's header before
        llama.cpp starts, so that it starts once."""
        try:
            trained = trained_context(Path(self._model_path))
        except (OSError, ValueError):
            return context  # llama.cpp will say what is wrong with the file
        if trained and context > trained:
            logger.info("%s was trained for %d tokens of context, not the family's %d: using %d",
                        self._model_path, trained, context, trained)
            return trained
        return context

    def _configure(self) -> None:
        meta = self._get("/v1/models")["data"][0]["meta"]
        self.vocab_size = int(meta["n_vocab"])
        self._props = self._get("/props")
        logger.info("llama.cpp serves %s: %d slots sharing %d tokens, %d threads, %d GPU layers",
                    self._model_path, self.n_parallel, self.context_length, self._n_threads,
                    self._n_gpu_layers)

    def _start(self, context: int) -> None:
        import httpx
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = self._model_path
        params.n_parallel = self.n_parallel
        # One cache for all slots: a request may use all of it, and memory does not grow with
        # the slots. When concurrent requests fill it, llama.cpp fails the one that no longer fits.
        params.kv_unified = True
        params.n_ctx = context
        for cpu in (params.cpuparams, params.cpuparams_batch):
            cpu.n_threads, cpu.poll = self._n_threads, self._poll
        params.n_gpu_layers = self._n_gpu_layers
        params.verbosity = LOG_ERRORS_ONLY
        # The server also listens on a random local port, where Fleet reaches the tokenizer and
        # the model's metadata (the binding exposes neither). A random key keeps every other local
        # process out; Fleet's own completion calls go around the HTTP layer and need none.
        key = secrets.token_urlsafe(24)
        params.api_keys = [key]
        with _captured_stderr() as captured:
            try:
                self.server = xllamacpp.Server(params)
            except Exception as exc:  # the binding says "Failed to init server" and no more
                raise RuntimeError(_load_error(captured, exc)) from None
        self._http = httpx.Client(base_url=self.server.listening_address, timeout=60.0,
                                  headers={"Authorization": f"Bearer {key}"})

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        # Dropping the server stops llama.cpp's loop and frees the model and its cache.
        self.server = None

    def _get(self, path: str) -> Any:
        reply = self._http.get(path)
        reply.raise_for_status()
        return reply.json()

    # ---- prompt side (see fleet.engines.base.LLMEngine) ---------------------------------
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
        reply = self._http.post("/tokenize", json={"content": text, "add_special": add_special_tokens,
                                                   "parse_special": True})
        reply.raise_for_status()
        return [int(t) for t in reply.json()["tokens"]]

    def stop_token_ids(self, family_stops: list[str], family_stop_ids: list[int]) -> tuple[int, ...]:
        # llama.cpp ends a sequence by itself on every end-of-generation token of the vocabulary
        # (eos, eot, <|im_end|>, <end_of_turn>...): nothing to add. A request's own
        # stop_token_ids still reach the scheduler in its sampling settings.
        return ()

    # ---- generation --------------------------------------------------------------------
    def make_scheduler(self, max_running: int, max_requests: int) -> Any:
        from fleet.engines.llamacpp_scheduler import LlamaCppScheduler

        return LlamaCppScheduler(self, slots=min(max_running, self.n_parallel),
                                 max_requests=max_requests)
