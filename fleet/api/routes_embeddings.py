"""POST /v1/embeddings in OpenAI's shape."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from fleet.api.protocol import EmbeddingRequest
from fleet.errors import BadRequest

router = APIRouter()


def _texts(value: str | list[Any]) -> list[str]:
    texts = [value] if isinstance(value, str) else value
    if not texts:
        raise BadRequest("input must not be empty", code="empty_input")
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest("token-id input is not supported by this model; send strings")
    if any(not t for t in texts):
        raise BadRequest("input must not contain empty strings", code="empty_input")
    return texts


def _encode(vector: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        # OpenAI's base64 is the little-endian float32 bytes of the vector.
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


@router.post("/v1/embeddings")
async def create_embeddings(request: Request, body: EmbeddingRequest) -> Response:
    texts = _texts(body.input)
    vectors, prompt_tokens = await request.app.state.cluster.router.call(body.model, "embed", texts)
    if body.dimensions is not None and body.dimensions != vectors.shape[1]:
        raise BadRequest(
            f"model {body.model} produces {vectors.shape[1]}-dimensional vectors; "
            f"dimensions={body.dimensions} is not supported for it",
            code="unsupported_dimensions",
        )
    payload = {
        "object": "list",
        "model": body.model,
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")
