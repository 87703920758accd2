"""Embeddings on sentence-transformers: the reference implementation of the models' pooling and
normalisation, so vectors match what users get in-process."""

from __future__ import annotations

from typing import Any

import numpy as np

from fleet.catalogue.schemas import BaseFamily
from fleet.engines.base import EmbeddingResult


class SentenceTransformersEmbedding:
    def __init__(self, model_path: str, family: BaseFamily, device: str, **kwargs: Any):
        self._model_path = model_path
        self._family = family
        self._device = device
        self._trust_remote_code = bool(
            kwargs.get("trust_remote_code", getattr(family, "trust_remote_code", False))
        )
        self._model: Any = None

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(
            self._model_path,
            device=self._device,
            trust_remote_code=self._trust_remote_code,
            local_files_only=True,
        )
        # Warm the kernels once so the first user request is not the slow one.
        self._model.encode(["warm up"], convert_to_numpy=True)

    @property
    def dimensions(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model actually reads: special tokens included, truncated at its limit."""
        encoded = self._model.tokenizer(
            texts,
            truncation=True,
            max_length=self._model.max_seq_length,
            add_special_tokens=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return sum(len(ids) for ids in encoded["input_ids"])

    def embed(self, texts: list[str]) -> EmbeddingResult:
        vectors = self._model.encode(
            texts, batch_size=max(1, len(texts)), convert_to_numpy=True, show_progress_bar=False
        )
        return EmbeddingResult(
            vectors=np.ascontiguousarray(vectors, dtype=np.float32),
            prompt_tokens=self.count_tokens(texts),
        )

    def close(self) -> None:
        self._model = None
