"""POST /v1/rerank in the Cohere/Jina shape that Xinference serves."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter

from fleet.api.hot_routes import HotRoute
from fleet.api.protocol.bodies import RerankRequest
from fleet.limits import check_request_tokens, estimated_tokens

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

router = APIRouter()


async def rerank(cluster: ClusterHandle, body: RerankRequest) -> bytes:
    """The JSON answer to one rerank request (served by fleet.api.fast_routes)."""
    documents = body.texts()  # none empty: RerankRequest refused those
    # Each document is read with the query: the query counts once per document.
    tokens = sum(estimated_tokens(d) for d in documents) + estimated_tokens(body.query) * len(documents)
    check_request_tokens(tokens, f"the query and documents hold about {tokens} tokens "
                                 "(characters / 4, the query counted once per document)")
    if body.keep_alive is not None:  # Ollama's: the model's from now on
        await cluster.router.keep_alives.apply(body.model, body.keep_alive)
    scores, tokens = await cluster.router.call(
        body.model, "rerank", "rerank", body.query, documents,
        tokens=lambda result: (result[1], 0), grouped=True,
    )
    order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)
    if body.top_n is not None:
        order = order[: body.top_n]
    results = [
        {
            "index": i,
            "relevance_score": scores[i],
            "document": {"text": documents[i]} if body.return_documents else None,
        }
        for i in order
    ]
    meta_tokens = {"input_tokens": tokens, "output_tokens": 0} if body.return_len else None
    return orjson.dumps({
        "id": str(uuid.uuid4()),
        "results": results,
        "meta": {"api_version": None, "billed_units": None, "tokens": meta_tokens, "warnings": None},
    }, option=orjson.OPT_SERIALIZE_NUMPY)


RERANK = HotRoute("/v1/rerank", RerankRequest, rerank, name="create_rerank")
RERANK.declare(router)
