"""llama.cpp's server (xllamacpp) in this process, started the way every Fleet engine on llama.cpp
needs it: the threads this process may use, how busily they wait, the GPU layers, and llama.cpp's
own words when a load fails. Used by fleet.engines.llamacpp_llm (chat and completions) and
fleet.engines.llamacpp_embedding.

The server also listens on a random local port, where Fleet reaches what the binding does not
expose (the tokenizer, the model's metadata, and, for a model with a vision projector, the
completions that carry images). A random key keeps every other local process out; completions
(of a model without a projector) and embeddings are direct calls into the binding."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from fleet.engines.launch_options import LlamaCppOptions
from fleet.gguf_metadata import read_gguf_metadata, trained_context

logger = logging.getLogger(__name__)

ALL_LAYERS = 999  # llama.cpp's way to say "every layer on the GPU"
# How hard llama.cpp's threads spin waiting for work (0-100; llama.cpp's default is 50). Measured
# here on 2 shared cores, SmolLM2 Q4_1 decode: 50 and 0 both ~110 tok/s on idle cores, but with
# other processes busy 50 fell to 9-30 tok/s while 0 kept ~110. A worker runs several replicas.
DEFAULT_POLL = 0
# llama.cpp's log level threshold: 1 prints errors only. Its info lines (a few dozen per load)
# would drown the worker's log.
LOG_ERRORS_ONLY = 1
# Listener threads beyond the slots' streams, for tokenizing and counting meanwhile.
HTTP_SPARE_THREADS = 4
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


class ServerOptions(TypedDict):
    """The part of LlamaServer.start's arguments that every llama.cpp engine takes alike."""

    threads: int
    poll: int
    gpu_layers: int


def engine_options(options: LlamaCppOptions, device: str | None) -> ServerOptions:
    """The launch options every llama.cpp engine takes: `n_threads` (default: usable_cores()),
    `poll` (default DEFAULT_POLL) and `n_gpu_layers` (default: all of them on a CUDA launch)."""
    gpu_layers = options.n_gpu_layers
    on_gpu = (device or "").startswith("cuda")
    return {"threads": options.n_threads or usable_cores(),
            "poll": DEFAULT_POLL if options.poll is None else options.poll,
            "gpu_layers": gpu_layers if gpu_layers is not None else (ALL_LAYERS if on_gpu else 0)}


def file_metadata(model_path: str) -> dict[str, Any]:
    """The GGUF file's metadata, read before llama.cpp starts; empty when it cannot be read
    (llama.cpp will then say what is wrong with the file)."""
    try:
        return read_gguf_metadata(Path(model_path))
    except (OSError, ValueError):
        return {}


def capped_by_training(model_path: str, meta: dict[str, Any], context: int) -> int:
    """`context`, or less when the model was trained for less: a family may allow more than a
    file holds, and a cache that size would hold context no request may use. Known from the
    header, so llama.cpp starts once, with the right size."""
    trained = trained_context(meta)
    if trained and context > trained:
        logger.info("%s was trained for %d tokens of context, not the family's %d: using %d",
                    model_path, trained, context, trained)
        return trained
    return context


# A streamed completion: llama.cpp's request body, and the callback that takes each chunk and
# returns True to stop (xllamacpp's handle_completions, or LlamaServer.stream_completion).
CompletionCall = Callable[[dict[str, Any], Callable[[dict[str, Any]], bool]], None]


@dataclass(frozen=True)
class Projector:
    """A vision projector (mmproj GGUF) for llama.cpp to load beside the model, and the bounds
    of the tokens an image becomes where the projector sizes images (None: its own)."""

    path: str
    min_tokens: int | None = None
    max_tokens: int | None = None


class LlamaServer:
    """A started server and the HTTP client for its local listener."""

    def __init__(self, server: Any, http: Any):
        self.server = server
        self._http = http

    @classmethod
    def start(cls, model_path: str, *, n_parallel: int, context: int, threads: int, poll: int,
              gpu_layers: int, embedding: bool = False, pooling: int = -1,
              batch: int | None = None, projector: Projector | None = None) -> LlamaServer:
        """`context` tokens of KV cache shared by `n_parallel` slots. `embedding`: pooled,
        L2-normalised vectors instead of text, pooled the file's way or by `pooling` (llama.cpp's
        enum); then `batch` must hold the longest input (a whole input is read in one pass).
        `projector`: the model reads images too (see `stream_completion`)."""
        import httpx
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = model_path
        if projector is not None:
            params.mmproj.path = projector.path
            params.image_min_tokens = projector.min_tokens or -1
            params.image_max_tokens = projector.max_tokens or -1
            # Completions then go through the listener, each holding one of its threads for its
            # whole stream: one per slot, and room beside them for tokenizing and counting.
            params.n_threads_http = n_parallel + HTTP_SPARE_THREADS
        params.n_parallel = n_parallel
        # One cache for all slots: a request may use all of it, and memory does not grow with
        # the slots. When concurrent requests fill it, llama.cpp fails the one that no longer fits.
        params.kv_unified = True
        params.n_ctx = context
        if embedding:
            params.embedding = True
            params.pooling_type = pooling
            params.embd_normalize = 2  # Euclidean
            params.n_batch = params.n_ubatch = batch or context
        for cpu in (params.cpuparams, params.cpuparams_batch):
            cpu.n_threads, cpu.poll = threads, poll
        params.n_gpu_layers = gpu_layers
        params.verbosity = LOG_ERRORS_ONLY
        key = secrets.token_urlsafe(24)
        params.api_keys = [key]
        with _captured_stderr() as captured:
            try:
                server = xllamacpp.Server(params)
            except Exception as exc:  # the binding says "Failed to init server" and no more
                raise RuntimeError(_load_error(captured, exc)) from None
        # httpx's own limits, but with a projector every slot's stream holds a connection too:
        # no cap below theirs.
        limits = httpx.Limits(max_connections=None if projector else 100,
                              max_keepalive_connections=20)
        http = httpx.Client(base_url=server.listening_address, timeout=60.0,
                            headers={"Authorization": f"Bearer {key}"}, limits=limits)
        return cls(server, http)

    def get(self, path: str) -> Any:
        reply = self._http.get(path)
        reply.raise_for_status()
        return reply.json()

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """llama.cpp's own tokenization: special tokens written in the text are read as such,
        and bos/eos are added only when asked and the model wants them."""
        reply = self._http.post("/tokenize", json={"content": text, "add_special": add_special,
                                                   "parse_special": True})
        reply.raise_for_status()
        return [int(t) for t in reply.json()["tokens"]]

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """llama.cpp's answer to a POST, raised as LlamaCppRefusal when it refuses."""
        reply = self._http.post(path, json=body)
        if reply.status_code != 200:
            raise LlamaCppRefusal(reply.status_code, _error_message(reply.content))
        return reply.json()

    def stream_completion(self, body: dict[str, Any],
                          on_chunk: Callable[[dict[str, Any]], bool]) -> None:
        """What `server.handle_completions` does (the binding's OpenAI completions: each
        chunk to `on_chunk`, which returns True to stop), through llama.cpp's own /completion
        route on the listener. With a projector loaded, only that route reads a prompt with
        images, and the binding's refuses a prompt of token ids. Each chunk is given in the
        binding's shape, so that one reader serves both; leaving the stream (closing the
        connection) stops llama.cpp's task."""
        import httpx

        # A fresh connection per stream: llama.cpp closes a streamed one at its end, and a
        # pooled one reused after that fails the next request.
        with self._http.stream("POST", "/completion", json=body, headers={"Connection": "close"},
                               timeout=httpx.Timeout(60.0, read=None)) as reply:
            if reply.status_code != 200:
                on_chunk({"error": {"code": reply.status_code,
                                    "message": _error_message(reply.read())}})
                return
            for line in reply.iter_lines():
                chunk = _native_chunk(line)
                if chunk is not None and on_chunk(chunk):
                    return

    def close(self) -> None:
        self._http.close()
        # Dropping the server stops llama.cpp's loop and frees the model and its cache.
        self.server = None


class LlamaCppRefusal(Exception):
    """llama.cpp answered a request on its listener with an error."""

    def __init__(self, status: int, message: str):
        super().__init__(f"llama.cpp answered {status}: {message}")
        self.status = status
        self.message = message


def _error_message(content: bytes) -> str:
    try:
        error = json.loads(content).get("error") or {}
        return str(error.get("message") or error)
    except (ValueError, AttributeError):
        return content.decode("utf-8", errors="replace")[:500]


def _native_chunk(line: str) -> dict[str, Any] | None:
    """One line of /completion's event stream as a chunk of the binding's OpenAI completions
    (choices[0] with text, logprobs and finish_reason; usage and timings); None for lines that
    carry none (blank lines between events)."""
    kind, _, data = line.partition(": ")
    if kind not in ("data", "error") or not data:
        return None
    chunk = json.loads(data)
    if kind == "error" or "error" in chunk:
        return chunk if "error" in chunk else {"error": chunk}
    finish = None
    if chunk.get("stop"):
        finish = "length" if chunk.get("stop_type") == "limit" else "stop"
    probabilities = chunk.get("completion_probabilities")
    answer: dict[str, Any] = {"choices": [{
        "text": chunk.get("content") or "", "index": 0, "finish_reason": finish,
        "logprobs": {"content": probabilities} if probabilities else None}]}
    if "timings" in chunk:
        answer["timings"] = chunk["timings"]
    if finish:
        answer["usage"] = {"completion_tokens": chunk.get("tokens_predicted", 0),
                           "prompt_tokens": chunk.get("tokens_evaluated", 0)}
    return answer
