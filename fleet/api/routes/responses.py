"""POST /v1/responses (OpenAI's Responses API, whole or streamed).

A Responses request runs as the chat request it translates to (fleet.api.responses.to_chat), on
the same replicas, with the same permission, admission limits and metrics as chat; only the
answer's shape differs (fleet.api.responses.answer, .events)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter

from fleet.api.fast_routes import EventStream
from fleet.api.hot_routes import HotRoute
from fleet.api.protocol.openai_responses import ResponsesRequest
from fleet.api.responses import answer
from fleet.api.responses.events import ResponseEvents
from fleet.api.responses.to_chat import chat_request
from fleet.api.streams import relay
from fleet.messages import GenerationResult

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

router = APIRouter()

RESPONSES_PATH = "/v1/responses"
# The endpoint label of these requests in the metrics (chat's is "chat_completions").
ENDPOINT = "responses"


async def responses(cluster: ClusterHandle, body: ResponsesRequest) -> bytes | EventStream:
    """The answer to one Responses request: the whole Response, or its stream of events."""
    # What a request may hold depends on its model (an image, on whether it sees), so an
    # unknown model is the answer (404) before anything about the content is.
    await cluster.router.replicas_of(body.model)
    call = chat_request(body).generation_call()
    if not body.stream:
        result: GenerationResult = await cluster.router.call(
            body.model, ENDPOINT, "generate", call, tokens=GenerationResult.token_counts)
        return orjson.dumps(answer.response(body, result.choices[0], result.usage))
    stream = await cluster.router.open_stream(body.model, ENDPOINT, call)
    return EventStream(relay(stream, ResponseEvents(body, stream.prompt_tokens)))


# A client that leaves cancels its answer, and the replica stops generating for it.
RESPONSES = HotRoute(RESPONSES_PATH, ResponsesRequest, responses, name="create_response",
                     watch_disconnect=True)
RESPONSES.declare(router)
