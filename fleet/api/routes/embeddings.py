"""POST /v1/embeddings in OpenAI's shape."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter

from fleet.api.hot_routes import HotRoute
from fleet.api.protocol.bodies import EmbeddingRequest
from fleet.limits import check_request_tokens, estimated_tokens

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

router = APIRouter()


def _inputs(value: str | list[Any]) -> list[Any]:
    """A string, a list of strings, one list of token ids, or a list of them; none empty
    (EmbeddingRequest refused those)."""
    if isinstance(value, str):
        inputs: list[Any] = [value]
    elif isinstance(value[0], int):  # token ids: the request's model took a list of one kind
        inputs = [value]
    else:
        inputs = value
    tokens = sum(estimated_tokens(item) for item in inputs)
    check_request_tokens(tokens, f"input holds about {tokens} tokens (token ids, and "
                                 "characters / 4 for text)")
    return inputs


def _encode(vector: np.ndarray, encoding_format: str) -> Any:
    if encoding_format == "base64":
        # OpenAI's base64 is the little-endian float32 bytes of the vector.
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector  # orjson writes float32 arrays itself, each number in its shortest exact form


async def embeddings(cluster: ClusterHandle, body: EmbeddingRequest) -> bytes:
    """The JSON answer to one embeddings request (served by fleet.api.fast_routes)."""
    inputs = _inputs(body.input)
    if body.keep_alive is not None:  # Ollama's: the model's from now on
        await cluster.router.keep_alives.apply(body.model, body.keep_alive)
    vectors, prompt_tokens = await cluster.router.call(
        body.model, "embeddings", "embed", inputs, body.should_truncate, body.dimensions,
        tokens=lambda result: (result[1], 0), grouped=True,
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
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


EMBEDDINGS = HotRoute("/v1/embeddings", EmbeddingRequest, embeddings, name="create_embeddings")
EMBEDDINGS.declare(router)
