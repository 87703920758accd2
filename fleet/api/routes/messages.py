"""POST /v1/messages (Anthropic's Messages API, whole or streamed) and
/v1/messages/count_tokens.

A Messages request runs as the chat request it translates to (fleet.api.anthropic.to_chat), on
the same replicas, with the same permission, admission limits and metrics as chat; only the
answer's shape differs (fleet.api.anthropic.answer, .events). Errors take Anthropic's shape on
these paths (fleet.api.anthropic.errors). The `anthropic-version` header is accepted and not
required: Fleet speaks one version of the API."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from fastapi import APIRouter

from fleet.api.anthropic import answer
from fleet.api.anthropic.errors import COUNT_TOKENS_PATH, MESSAGES_PATH
from fleet.api.anthropic.events import MessageEvents
from fleet.api.anthropic.to_chat import chat_request
from fleet.api.chat_images import with_images
from fleet.api.fast_routes import EventStream
from fleet.api.hot_routes import HotRoute
from fleet.api.protocol.anthropic import CountTokensRequest, MessagesRequest
from fleet.api.streams import relay
from fleet.messages import GenerationCall, GenerationResult

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

router = APIRouter()

# The endpoint label of these requests in the metrics (chat's is "chat_completions").
ENDPOINT = "messages"
COUNT_ENDPOINT = "messages_count_tokens"


async def _chat_call(cluster: ClusterHandle, body: MessagesRequest | CountTokensRequest
                     ) -> GenerationCall:
    """The chat call that runs `body`, for a model that is there: what a request may hold
    depends on its model (an image block, on whether it sees), so an unknown model is the
    answer (404) before anything about the content is. Cached routes make this a lookup."""
    await cluster.router.replicas_of(body.model)
    return await with_images(cluster, body.model, chat_request(body).generation_call())


async def messages(cluster: ClusterHandle, body: MessagesRequest) -> bytes | EventStream:
    """The answer to one Messages request: the whole Message, or its stream of events."""
    call = await _chat_call(cluster, body)
    omit_thinking = getattr(body.thinking, "display", None) == "omitted"
    if not body.stream:
        result: GenerationResult = await cluster.router.call(
            body.model, ENDPOINT, "generate", call, tokens=GenerationResult.token_counts)
        return orjson.dumps(answer.message(body.model, result.choices[0], result.usage,
                                           body.stop_sequences, omit_thinking))
    stream = await cluster.router.open_stream(body.model, ENDPOINT, call)
    events = MessageEvents(body.model, stream.prompt_tokens, body.stop_sequences, omit_thinking)
    return EventStream(relay(stream, events))


async def count_tokens(cluster: ClusterHandle, body: CountTokensRequest) -> bytes:
    """The prompt tokens a Messages request of this body would read: rendered and tokenized
    by the model's replica, as for an answer (its usage's input_tokens)."""
    call = await _chat_call(cluster, body)
    # Counted as a request of the model; its tokens are not (the model read none of them).
    tokens: int = await cluster.router.call(body.model, COUNT_ENDPOINT, "count_tokens", call)
    return orjson.dumps({"input_tokens": tokens})


# A client that leaves cancels its answer, and the replica stops generating for it.
MESSAGES = HotRoute(MESSAGES_PATH, MessagesRequest, messages, name="create_message",
                    watch_disconnect=True)
COUNT_TOKENS = HotRoute(COUNT_TOKENS_PATH, CountTokensRequest, count_tokens,
                        name="count_message_tokens")
MESSAGES.declare(router)
COUNT_TOKENS.declare(router)
