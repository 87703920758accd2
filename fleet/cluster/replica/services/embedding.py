"""Embeddings and rerank on a replica: the requests that retrieval pipelines send in bursts,
gathered by one dynamic batcher (fleet.cluster.replica.batcher) into engine calls of many inputs.

The replica's actor (fleet.cluster.replica.model_actor) checks that the replica is ready and serves
the kind of request, then hands it here; the engine is attached once it has loaded. The
batcher exists from the start, so that the replica's statistics have the same shape while it
loads as when it serves."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fleet.admission import RequestLimits
from fleet.catalogue.schemas import BaseFamily
from fleet.cluster.replica.batcher import DynamicBatcher
from fleet.engines.base import EmbeddingInput
from fleet.errors import BadRequest
from fleet.limits import estimated_tokens

# A rerank item is one (query, document) pair, so a batch holds more of them.
RERANK_BATCH_ITEMS = 256


class EmbeddingService:
    """`embed` for embedding models, `rerank` for rerank models, on the engine's one thread."""

    def __init__(self, family: BaseFamily, model_uid: str, executor: ThreadPoolExecutor,
                 limits: RequestLimits):
        self._family = family
        self._model_uid = model_uid
        self._executor = executor
        self.engine: Any = None  # attached when loaded
        # Its queue holds `request_limits` requests, like an LLM's (429 past that). One batcher
        # a replica, of texts or token ids for embeddings, of pairs for rerank.
        self.batcher: DynamicBatcher[Any, Any]
        if family.model_type == "rerank":
            self.batcher = DynamicBatcher(self._run_rerank_batch, executor,
                                          max_batch_items=RERANK_BATCH_ITEMS,
                                          max_open_requests=limits.max_requests)
        else:
            self.batcher = DynamicBatcher(self._run_embed_batch, executor,
                                          max_open_requests=limits.max_requests)

    def _run_embed_batch(self, inputs: list[EmbeddingInput]) -> list[tuple[Any, int]]:
        """One engine call per kind of input (texts, token ids) in the batch."""
        rows: list[tuple[Any, int]] = [(None, 0)] * len(inputs)
        for want_text in (True, False):
            indices = [i for i, item in enumerate(inputs) if isinstance(item, str) == want_text]
            if indices:
                result = self.engine.embed([inputs[i] for i in indices])
                for row, index in enumerate(indices):
                    rows[index] = (result.vectors[row], result.token_counts[row])
        return rows

    def _run_rerank_batch(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        result = self.engine.score(pairs)
        return list(zip(result.scores, result.token_counts, strict=True))

    def _check_lengths(self, inputs: list[EmbeddingInput]) -> None:
        limit = self.engine.max_tokens
        for index, item in enumerate(inputs):
            length = self.engine.count_tokens(item) if isinstance(item, str) else len(item)
            if length > limit:
                raise BadRequest(
                    f"input[{index}] has {length} tokens, more than this model's limit of {limit}; "
                    "shorten it or allow truncation",
                    code="input_too_long",
                )

    def _check_dimensions(self, dimensions: int | None, full: int) -> None:
        if dimensions is None or dimensions == full:
            return
        allowed = getattr(self._family, "matryoshka_dimensions", None) or []
        if dimensions not in allowed:
            sizes = ", ".join(map(str, sorted({*allowed, full})))
            raise BadRequest(
                f"model {self._model_uid} gives {full}-dimensional vectors; "
                f"dimensions={dimensions} is not supported (it supports: {sizes})",
                code="unsupported_dimensions",
            )

    async def embed(self, inputs: list[EmbeddingInput], truncate: bool,
                    dimensions: int | None) -> tuple[Any, int]:
        """Vectors as one float32 numpy array (sent as a buffer) and the prompt token count."""
        self._check_dimensions(dimensions, self.engine.dimensions)
        if not truncate:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._check_lengths, inputs
            )
        rows = await self.batcher.submit(inputs, [estimated_tokens(i) for i in inputs])
        vectors = np.stack([vector for vector, _ in rows])
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors), sum(tokens for _, tokens in rows)

    async def rerank(self, query: str, documents: list[str]) -> tuple[list[float], int]:
        """A relevance score per document, and the tokens read."""
        pairs = [(query, document) for document in documents]
        query_tokens = estimated_tokens(query)
        rows = await self.batcher.submit(pairs, [query_tokens + estimated_tokens(d)
                                                 for d in documents])
        return [score for score, _ in rows], sum(tokens for _, tokens in rows)
