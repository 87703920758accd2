"""Rerank with a cross-encoder (bge-reranker, jina-reranker) on sentence-transformers."""

from __future__ import annotations

from typing import Any

from fleet.catalogue.schemas import BaseFamily
from fleet.engines.base import RerankResult


class CrossEncoderRerank:
    def __init__(self, model_path: str, family: BaseFamily, device: str, **kwargs: Any):
        self._model_path = model_path
        self._device = device
        self._max_tokens = int(kwargs.get("max_tokens") or getattr(family, "max_tokens", 512))
        self._trust_remote_code = bool(
            kwargs.get("trust_remote_code", getattr(family, "trust_remote_code", False))
        )
        self._model: Any = None

    def load(self) -> None:
        from sentence_transformers import CrossEncoder

        self._model = CrossEncoder(
            self._model_path, device=self._device, max_length=self._max_tokens,
            trust_remote_code=self._trust_remote_code,
        )
        self.score([("warm", "up")])

    def _token_counts(self, pairs: list[tuple[str, str]]) -> list[int]:
        encoded = self._model.tokenizer(
            [q for q, _ in pairs], [d for _, d in pairs], truncation=True,
            max_length=self._max_tokens, return_attention_mask=False, return_token_type_ids=False,
        )
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, pairs: list[tuple[str, str]]) -> RerankResult:
        scores = self._model.predict(
            [list(p) for p in pairs], batch_size=len(pairs), show_progress_bar=False,
            convert_to_numpy=True,
        )
        flat = scores.reshape(len(pairs), -1)[:, -1]  # one relevance logit per pair
        return RerankResult(scores=[float(s) for s in flat], token_counts=self._token_counts(pairs))

    def close(self) -> None:
        self._model = None
