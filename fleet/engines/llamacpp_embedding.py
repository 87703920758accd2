"""Embeddings from GGUF files on llama.cpp (xllamacpp's server in this process, in embedding mode).

Pooling is the file's own (its metadata says mean for BERT-style sentence models, last token for
Qwen3-Embedding...), or the launch's `pooling` (mean, cls, last) for a file that does not say;
vectors are L2-normalised, as the catalogue's sentence-transformers models give them.

Fleet tokenizes each text itself, with llama.cpp's tokenizer, and hands llama.cpp the token ids:
that gives the exact token count per input (llama.cpp reports only a request's total) and lets a
long input be truncated to the model's limit the way sentence-transformers does it, keeping the
closing special token, where llama.cpp would refuse it.

Launch options: `context_length` (tokens per input; default: the family's `max_tokens`, capped
by the file's trained context), `n_parallel` (inputs embedded together, default 8), `pooling`,
and the options of every llama.cpp engine (fleet.engines.llamacpp_server.engine_options);
fleet.engines.launch_options.LlamaCppEmbeddingOptions declares them."""

from __future__ import annotations

import logging
import os

import numpy as np

from fleet.catalogue.schemas import EmbeddingFamily
from fleet.engines.base import EmbeddingEngine, EmbeddingInput, EmbeddingResult, checked_options
from fleet.engines.launch_options import LlamaCppEmbeddingOptions
from fleet.engines.llamacpp_server import (
    LlamaServer,
    capped_by_training,
    engine_options,
    file_metadata,
)
from fleet.errors import BadRequest

logger = logging.getLogger(__name__)

DEFAULT_PARALLEL = 8
# An ubatch must hold a whole input (an embedding model reads it in one pass); a bigger one lets
# several inputs share a pass.
MIN_BATCH_TOKENS = 2048
# llama.cpp's pooling types (enum llama_pooling_type); -1 leaves the file's own.
POOLING_TYPES = {"mean": 1, "cls": 2, "last": 3}
_MODEL_DEFAULT = -1


class LlamaCppEmbedding:
    def __init__(self, model_path: str, family: EmbeddingFamily, device: str | None,
                 options: LlamaCppEmbeddingOptions | None = None):
        options = checked_options(options, LlamaCppEmbeddingOptions)
        self._model_path = model_path
        self._options = engine_options(options, device)
        self._parallel = options.n_parallel or DEFAULT_PARALLEL
        # The options' type admits only llama.cpp's names (lower-cased by its validator).
        pooling = options.pooling
        self._pooling = POOLING_TYPES[pooling] if pooling is not None else _MODEL_DEFAULT
        launch_context = options.context_length or options.n_ctx
        self._sized_by_launch = bool(launch_context)
        self._max_tokens = launch_context or family.max_tokens
        self._llama: LlamaServer | None = None
        self._closes_input = False
        self._dimensions = 0
        self._vocab_size = 0

    def load(self) -> None:
        if not os.path.isfile(self._model_path):
            raise FileNotFoundError(f"{self._model_path} is not a GGUF file")
        meta = file_metadata(self._model_path)
        if not self._sized_by_launch:
            self._max_tokens = capped_by_training(self._model_path, meta, self._max_tokens)
        # BERT closes each input with [SEP] (add_sep), decoder embedders with their end token
        # (add_eos): kept when an input is truncated.
        self._closes_input = bool(meta.get("tokenizer.ggml.add_eos_token")
                                  or meta.get("tokenizer.ggml.add_sep_token"))
        self._llama = LlamaServer.start(
            self._model_path, n_parallel=self._parallel, context=self._max_tokens * self._parallel,
            embedding=True, pooling=self._pooling,
            batch=max(self._max_tokens, MIN_BATCH_TOKENS), **self._options)
        try:
            meta = self._llama.get("/v1/models")["data"][0]["meta"]
            self._dimensions, self._vocab_size = int(meta["n_embd"]), int(meta["n_vocab"])
            self.embed(["warm up"])  # the first user request is not the slow one
        except BaseException:
            self.close()  # a failed launch leaves no server behind
            raise
        logger.info("llama.cpp embeds with %s: %d dimensions, up to %d tokens per input, %d at a time",
                    self._model_path, self._dimensions, self._max_tokens, self._parallel)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def count_tokens(self, text: str) -> int:
        """Untruncated length, for a request that asked not to truncate."""
        return len(self._server().tokenize(text, add_special=True))

    def _token_ids(self, item: EmbeddingInput) -> list[int]:
        if isinstance(item, str):
            ids = self._server().tokenize(item, add_special=True)
        else:
            ids = list(item)
            if any(t < 0 or t >= self._vocab_size for t in ids):
                raise BadRequest(f"token ids must be in [0, {self._vocab_size}) for this model")
        if len(ids) <= self._max_tokens:
            return ids
        if self._closes_input and isinstance(item, str):
            return ids[:self._max_tokens - 1] + ids[-1:]
        return ids[:self._max_tokens]

    def embed(self, inputs: list[EmbeddingInput]) -> EmbeddingResult:
        ids = [self._token_ids(item) for item in inputs]
        reply = self._server().server.handle_embeddings({"input": ids})
        if "error" in reply:
            raise RuntimeError(f"llama.cpp: {reply['error'].get('message', reply['error'])}")
        rows = sorted(reply["data"], key=lambda row: row["index"])
        vectors = np.asarray([row["embedding"] for row in rows], dtype=np.float32)
        return EmbeddingResult(vectors=np.ascontiguousarray(vectors),
                               token_counts=[len(row) for row in ids])

    def _server(self) -> LlamaServer:
        if self._llama is None:
            raise RuntimeError("the model is not loaded")
        return self._llama

    def close(self) -> None:
        if self._llama is not None:
            self._llama.close()
            self._llama = None


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[EmbeddingEngine] = LlamaCppEmbedding
