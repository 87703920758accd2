"""Embeddings on sentence-transformers: the reference implementation of the models' pooling and
normalisation, so vectors match what users get in-process.

Inputs are tokenized once: the same features give the vectors and the exact token counts, and
token-id inputs skip the tokenizer."""

from __future__ import annotations

from typing import Any

import numpy as np

from fleet.catalogue.schemas import EmbeddingFamily
from fleet.engines.base import (
    EmbeddingEngine,
    EmbeddingInput,
    EmbeddingResult,
    checked_options,
    wants_remote_code,
)
from fleet.engines.launch_options import SentenceTransformersEmbeddingOptions
from fleet.errors import BadRequest


class SentenceTransformersEmbedding:
    def __init__(self, model_path: str, family: EmbeddingFamily, device: str | None,
                 options: SentenceTransformersEmbeddingOptions | None = None):
        options = checked_options(options, SentenceTransformersEmbeddingOptions)
        self._model_path = model_path
        self._family = family
        self._device = device
        self._trust_remote_code = wants_remote_code(family, options)
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
        self.embed(["warm up"])

    @property
    def dimensions(self) -> int:
        # sentence-transformers 5.x renamed the method (the old name warns at every call).
        dimension = getattr(self._model, "get_embedding_dimension", None)
        if dimension is None:
            dimension = self._model.get_sentence_embedding_dimension
        return int(dimension())

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Untruncated length, for a request that asked not to truncate."""
        return len(self._model.tokenizer(text, add_special_tokens=True)["input_ids"])

    def _features(self, inputs: list[EmbeddingInput]) -> dict[str, Any]:
        if all(isinstance(i, str) for i in inputs):
            preprocess = getattr(self._model, "preprocess", None) or self._model.tokenize
            features = dict(preprocess(inputs))
            features.pop("modality", None)
            return features
        if any(isinstance(i, str) for i in inputs):
            raise BadRequest("input mixes strings and token ids; send one kind per request")
        limit = self.max_tokens
        ids = [list(i)[:limit] for i in inputs if not isinstance(i, str)]  # all, see above
        vocab = len(self._model.tokenizer)
        if any(t < 0 or t >= vocab for row in ids for t in row):
            raise BadRequest(f"token ids must be in [0, {vocab}) for this model")
        return dict(self._model.tokenizer.pad({"input_ids": ids}, return_tensors="pt"))

    def embed(self, inputs: list[EmbeddingInput]) -> EmbeddingResult:
        import torch

        features = self._features(inputs)
        token_counts = features["attention_mask"].sum(dim=1).tolist()
        features = {k: v.to(self._model.device) for k, v in features.items()}
        with torch.inference_mode():
            output = self._model.forward(features)
        vectors = output["sentence_embedding"].float().cpu().numpy()
        return EmbeddingResult(vectors=np.ascontiguousarray(vectors), token_counts=token_counts)

    def close(self) -> None:
        self._model = None


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[EmbeddingEngine] = SentenceTransformersEmbedding
