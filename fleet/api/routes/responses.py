"""OpenAI's Responses API: POST /v1/responses (whole or streamed), and the stored responses:
GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items.

A Responses request runs as the chat request it translates to (fleet.api.responses.to_chat), on
the same replicas, with the same permission, admission limits and metrics as chat; only the
answer's shape differs (fleet.api.responses.answer, .events). A response is kept unless the
request says `store: false` (OpenAI's default), written after it is answered, off the event
loop (fleet.api.responses.store)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request

from fleet.api.auth.middleware import check_model, check_stored_model
from fleet.api.chat_images import with_images
from fleet.api.fast_routes import EventStream
from fleet.api.hot_routes import HotRoute
from fleet.api.protocol.openai_responses import ResponsesRequest
from fleet.api.responses import answer
from fleet.api.responses.events import ResponseEvents
from fleet.api.responses.store import ResponseStore, conversation, not_found
from fleet.api.responses.to_chat import chat_request
from fleet.api.streams import relay
from fleet.database.responses import ResponseRecord
from fleet.messages import GenerationResult

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

router = APIRouter()

RESPONSES_PATH = "/v1/responses"
# The endpoint label of these requests in the metrics (chat's is "chat_completions").
ENDPOINT = "responses"


async def responses(cluster: ClusterHandle, body: ResponsesRequest) -> bytes | EventStream:
    """The answer to one Responses request: the whole Response, or its stream of events."""
    store: ResponseStore | None = cluster.responses
    kept: list[dict[str, Any]] = []
    history: list[Any] = []
    if body.previous_response_id is not None:
        # A stored response is read as the GET route reads it: by a key that may use its model.
        kept, history = await conversation(store, body.previous_response_id,
                                           check_stored_model)
    # What a request may hold depends on its model (an image, on whether it sees), so an
    # unknown model is the answer (404) before anything about the content is.
    await cluster.router.replicas_of(body.model)
    call = await with_images(cluster, body.model, chat_request(body, history).generation_call())

    def finished(response: dict[str, Any]) -> None:
        if store is not None and body.store is not False:
            store.keep(body, response, kept)

    if not body.stream:
        result: GenerationResult = await cluster.router.call(
            body.model, ENDPOINT, "generate", call, tokens=GenerationResult.token_counts)
        whole = answer.response(body, result.choices[0], result.usage)
        finished(whole)
        return orjson.dumps(whole)
    stream = await cluster.router.open_stream(body.model, ENDPOINT, call)
    return EventStream(relay(stream, ResponseEvents(body, stream.prompt_tokens, finished)))


# A client that leaves cancels its answer, and the replica stops generating for it.
RESPONSES = HotRoute(RESPONSES_PATH, ResponsesRequest, responses, name="create_response",
                     watch_disconnect=True)
RESPONSES.declare(router)


async def _stored(request: Request, response_id: str) -> ResponseRecord:
    """A stored response that the request's key may read: one of a model the key may use (a
    response's id, random and unguessable, is what else stands for it)."""
    store: ResponseStore | None = request.app.state.cluster.responses
    record = await store.find(response_id) if store is not None else None
    if record is None:
        raise not_found(response_id, store)
    check_model(request.scope, record.model)
    return record


@router.get("/v1/responses/{response_id}")
async def get_response(request: Request, response_id: str) -> dict[str, Any]:
    """A stored response, as it was answered."""
    return (await _stored(request, response_id)).response


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> dict[str, Any]:
    await _stored(request, response_id)
    store: ResponseStore = request.app.state.cluster.responses
    if not await store.delete(response_id):
        raise not_found(response_id, store)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(request: Request, response_id: str,
                           order: Literal["asc", "desc"] = "desc",
                           limit: int = Query(default=20, ge=1, le=100),
                           after: str | None = None) -> dict[str, Any]:
    """The input items of a stored response's request, a page at a time (OpenAI's list: newest
    first unless `order` is asc; `after` an item id of the last page)."""
    record = await _stored(request, response_id)
    items = record.input_items if order == "asc" else record.input_items[::-1]
    if after is not None:
        ids = [item.get("id") for item in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}
