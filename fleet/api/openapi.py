"""The API's OpenAPI document, made to say what the server really answers.

FastAPI's own document lists 200 and 422 for every route: Fleet answers a malformed request with
400 (OpenAI's status), never 422, and answers 401, 403, 404, 409, 413, 429 and 503 where they
apply, each with one error shape. This module rewrites the generated document once, when it is
first asked for:
- every operation lists its error statuses (ROUTE_ERRORS, plus 400 where it takes input, 413
  where it takes a body, 401 and 403 where API keys guard it), each with ErrorResponse
  (AnthropicErrorResponse on the Messages routes, fleet.api.anthropic.errors);
- the main endpoints' 200 answers have their schemas (fleet.api.protocol.responses), and the
  streamed ones also declare `text/event-stream`;
- 429 declares `Retry-After` and 401 `WWW-Authenticate`, which those answers carry;
- the request bodies' schemas are pydantic's own, with their exact numbers: FastAPI reads its
  document into a model whose bounds are floats, and a bound past 2**53 came out as another
  number (a seed's 2**63 - 1 as 2**63, which the server refuses).
A test holds every route of the application to an entry in ROUTE_ERRORS, so a new route cannot
go undocumented."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, get_args

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from fleet.api.anthropic.errors import PATHS as ANTHROPIC_PATHS
from fleet.api.protocol import anthropic_answers, openai_responses_answers
from fleet.api.protocol import responses as answers

_REF = "#/components/schemas/{model}"
_INFERENCE = (404, 429, 503)  # unknown model; its queue is full; not ready, or its engine failed
_MODEL = (404,)  # no model with that uid

# The statuses each route answers beyond 400 (when it takes input), 413 (when it takes a body)
# and 401/403 (when keys are on): the errors its code raises.
ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("GET", "/status"): (),
    ("GET", "/v1/cluster/auth"): (),
    ("GET", "/v1/address"): (),
    ("GET", "/v1/cluster/info"): (),
    ("GET", "/v1/workers"): (),
    ("GET", "/v1/models"): (),
    # 403: a launch option the operator did not allow (fleet.cluster.supervisor.launch_policy); 503: the
    # engine could not load the model, or its worker is gone.
    ("POST", "/v1/models"): (403, 503),
    ("GET", "/v1/models/estimate"): (403,),
    ("GET", "/v1/models/instances"): (),
    ("GET", "/v1/models/{model_uid}"): _MODEL,
    ("DELETE", "/v1/models/{model_uid}"): _MODEL,
    ("POST", "/v1/models/{model_uid}/cancel"): _MODEL,
    ("GET", "/v1/models/{model_uid}/progress"): _MODEL,
    ("GET", "/v1/models/{model_uid}/replicas"): _MODEL,
    # 409: the model is still launching or terminating; 503: a new replica failed to load.
    ("POST", "/v1/models/{model_uid}/replicas"): (404, 409, 503),
    ("DELETE", "/v1/models/{model_uid}/replicas/{replica_id}"): (404, 409),
    ("POST", "/v1/models/{model_uid}/autoscale"): _MODEL,
    ("PUT", "/v1/models/{model_uid}/aliases"): _MODEL,
    ("GET", "/v1/models/{model_uid}/events"): _MODEL,
    ("POST", "/v1/model_registrations/{model_type}"): (),
    ("GET", "/v1/model_registrations/{model_type}"): (),
    ("GET", "/v1/model_registrations/{model_type}/{model_name}"): (404,),
    ("DELETE", "/v1/model_registrations/{model_type}/{model_name}"): (404,),
    ("GET", "/v1/engines/{model_name}"): (),
    ("GET", "/v1/engines/{model_type}/{model_name}"): (),
    ("POST", "/v1/embeddings"): _INFERENCE,
    ("POST", "/v1/rerank"): _INFERENCE,
    ("POST", "/v1/chat/completions"): _INFERENCE,
    ("POST", "/v1/completions"): _INFERENCE,
    ("POST", "/v1/messages"): _INFERENCE,
    ("POST", "/v1/messages/count_tokens"): _INFERENCE,
    ("POST", "/v1/responses"): _INFERENCE,
    ("GET", "/v1/responses/{response_id}"): (404,),  # never stored, deleted, or too old
    ("DELETE", "/v1/responses/{response_id}"): (404,),
    ("GET", "/v1/responses/{response_id}/input_items"): (404,),
    ("POST", "/v1/images/generations"): _INFERENCE,
    ("POST", "/v1/images/variations"): _INFERENCE,
    ("POST", "/v1/images/edits"): _INFERENCE,
    ("POST", "/v1/images/inpainting"): _INFERENCE,
    ("POST", "/v1/images/ocr"): _INFERENCE,
    ("GET", "/v1/images/files/{name}"): (404,),  # not one of ours, or past its time
    ("POST", "/v1/audio/transcriptions"): _INFERENCE,
    ("POST", "/v1/audio/translations"): _INFERENCE,
    ("POST", "/v1/audio/speech"): _INFERENCE,
    ("GET", "/v1/requests/{request_id}/progress"): (404,),  # no such request (any more)
    ("GET", "/v1/cache/models"): (),
    ("GET", "/v1/cache/models/files"): (),
    ("DELETE", "/v1/cache/models"): (404, 409),  # 409: a running model reads it
    ("GET", "/v1/cluster/overview"): (),  # the web UI's (fleet.api.routes.overview)
    ("GET", "/v1/auth/me"): (),
    ("GET", "/v1/engines"): (),
    # Keys made while the cluster runs (fleet.api.routes.keys): 404 an unknown id, 409 a key
    # of --api-key or --auth-config (read-only), or a revoked one to change; the audit log.
    ("POST", "/v1/keys"): (),
    ("GET", "/v1/keys"): (),
    ("GET", "/v1/keys/{key_id}"): (404,),
    ("PATCH", "/v1/keys/{key_id}"): (404, 409),
    ("DELETE", "/v1/keys/{key_id}"): (404, 409),
    ("GET", "/v1/users"): (),
    ("PUT", "/v1/users/{name}/limits"): (),
    ("GET", "/v1/audit"): (),
    ("GET", "/v1/usage"): (),  # 403: another key's usage, which keys guard anyway
}

# The 200 answers that have a schema of their own, and the chunk of those that also stream.
_ANSWERS: dict[tuple[str, str], tuple[type[BaseModel], type[BaseModel] | None]] = {
    ("POST", "/v1/chat/completions"): (answers.ChatCompletion, answers.ChatCompletionChunk),
    ("POST", "/v1/completions"): (answers.Completion, answers.CompletionChunk),
    ("POST", "/v1/embeddings"): (answers.EmbeddingResponse, None),
    ("POST", "/v1/rerank"): (answers.RerankResponse, None),
    ("GET", "/v1/models"): (answers.ModelList, None),
    ("POST", "/v1/messages"): (anthropic_answers.AnthropicMessage,
                               anthropic_answers.AnthropicStreamEvent),
    ("POST", "/v1/messages/count_tokens"): (anthropic_answers.AnthropicTokenCount, None),
    ("POST", "/v1/responses"): (openai_responses_answers.ResponseObject,
                                openai_responses_answers.ResponseStreamEvent),
}
# The routes whose streams name each event (`event:` and `data:`), as Anthropic's and the
# Responses API's do; the rest send `data:` alone, ending with `data: [DONE]`.
_NAMED_EVENTS = frozenset({*ANTHROPIC_PATHS, "/v1/responses"})

_HEADERS: dict[int, dict[str, Any]] = {
    429: {"Retry-After": {"description": "Seconds to wait before trying again.",
                          "required": True, "schema": {"type": "integer"}}},
    401: {"WWW-Authenticate": {"description": "Bearer: send 'Authorization: Bearer <key>'.",
                               "required": True, "schema": {"type": "string"}}},
}


def _stream(chunk: type[BaseModel]) -> dict[str, Any]:
    """Server-sent events, one per chunk (Open API 3.1: `schema` describes each event): its
    data a chunk, or an error once the answer's headers have left, and `[DONE]` at the end."""
    json_data = {"type": "string", "contentMediaType": "application/json", "contentSchema": {
        "anyOf": [{"$ref": _REF.format(model=chunk.__name__)},
                  {"$ref": _REF.format(model="StreamError")}]}}
    return {"schema": {
        "type": "object", "required": ["data"],
        "properties": {"data": {"anyOf": [{"const": "[DONE]"}, json_data]}},
        "description": f"Server-sent events: `data: <{chunk.__name__} JSON>` per chunk, "
                       "`data: {\"error\": {...}}` for an error after the headers, and "
                       "`data: [DONE]` at the end."}}

def _named_stream(event: type[BaseModel]) -> dict[str, Any]:
    """Named server-sent events (Anthropic's, the Responses API's): each has its name
    (`event:`) and its JSON (`data:`), whose `type` is the name again."""
    data = {"type": "string", "contentMediaType": "application/json",
            "contentSchema": {"$ref": _REF.format(model=event.__name__)}}
    names = list(get_args(event.model_fields["type"].annotation))
    return {"schema": {
        "type": "object", "required": ["event", "data"],
        "properties": {"event": {"enum": names}, "data": data},
        "description": _EVENT_ORDER[event.__name__]}}


_EVENT_ORDER = {
    "AnthropicStreamEvent": "Server-sent events in Anthropic's order: message_start, ping, "
                            "then per content block content_block_start, "
                            "content_block_delta..., content_block_stop, then message_delta "
                            "and message_stop; an error after the headers is an `error` event "
                            "(AnthropicErrorResponse).",
    "ResponseStreamEvent": "Server-sent events in OpenAI's order, numbered by sequence_number: "
                           "response.created, response.in_progress, then per output item "
                           "response.output_item.added, its parts' and deltas' events, "
                           "response.output_item.done, then response.completed (or "
                           "response.incomplete); an error after the headers is an `error` "
                           "event.",
}


def _error_model(path: str) -> str:
    """The error shape of a path's answers: Anthropic's on its routes, OpenAI's elsewhere."""
    return ("AnthropicErrorResponse" if path in ANTHROPIC_PATHS else "ErrorResponse")


_BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_NULL = {"type": "null"}


@dataclass(frozen=True)
class FileField:
    """A file of a multipart form: `media_types` (comma-separated) when only those are read."""

    description: str
    required: bool = False
    media_types: str | None = None


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A form field's schema without null: a form cannot send one (a field is left out), and
    a text field "null" is the string."""
    schema = {key: value for key, value in schema.items()
              if not (key == "default" and value is None)}
    members = schema.get("anyOf")
    if isinstance(members, list) and _NULL in members:
        rest = [member for member in members if member != _NULL]
        del schema["anyOf"]
        schema.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
    return schema


def multipart_body(form: type[BaseModel], files: dict[str, FileField]) -> dict[str, Any]:
    """The OpenAPI description (`openapi_extra`) of a multipart route's body: the form model's
    text fields, as the form is validated (no others: the forms refuse unknown fields), and its
    files, none empty. These routes read the form themselves, since clients name their files
    differently (fleet.api.protocol.image_uploads, fleet.api.protocol.audio_uploads)."""
    schema = form.model_json_schema()
    properties = {name: _form_field(field) for name, field in schema["properties"].items()}
    for name, file in files.items():
        properties[name] = {"type": "string", "format": "binary", "minLength": 1,
                            "description": file.description}
    required = [*schema.get("required", []), *(name for name, f in files.items() if f.required)]
    encoding = {name: {"contentType": f.media_types} for name, f in files.items() if f.media_types}
    body = {**schema, "type": "object", "properties": properties, "required": required,
            "additionalProperties": False}
    content: dict[str, Any] = {"schema": body}
    if encoding:
        content["encoding"] = encoding
    return {"requestBody": {"required": True, "content": {"multipart/form-data": content}}}


def install_openapi(app: FastAPI, guarded: Any = None) -> None:
    """Serve the honest document at /openapi.json (and /docs). `guarded(method, path)` says
    whether API keys guard a route (None: no keys, no 401/403)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = honest_document(app, guarded)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def honest_document(app: FastAPI, guarded: Any = None) -> dict[str, Any]:
    document = get_openapi(title=app.title, version=app.version, description=app.description,
                           routes=app.routes)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    models = [answers.ErrorResponse, answers.StreamError, anthropic_answers.AnthropicErrorResponse,
              *(model for pair in _ANSWERS.values() for model in pair if model is not None)]
    _, definitions = models_json_schema([(m, "serialization") for m in models],
                                        ref_template=_REF)
    schemas.update(definitions.get("$defs", {}))
    _exact_request_schemas(app, document)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            key = (method.upper(), path)
            _document_errors(operation, key, guarded is not None and guarded(*key))
            if key in _ANSWERS:
                _document_answer(operation, *_ANSWERS[key], path in _NAMED_EVENTS)
    return document


def _api_routes(app: FastAPI) -> list[Any]:
    """The application's API routes, included routers flattened where FastAPI keeps them
    nested (each as FastAPI's route context, which reads like the route)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.165 kept one flat list
        return [route for route in app.routes if isinstance(route, APIRoute)]
    return [context for context in iter_route_contexts(app.routes)
            if isinstance(context.original_route, APIRoute)]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a body's annotation names (`AddReplicasRequest | None`: the one)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for argument in get_args(annotation) for model in _models_in(argument)]


def _exact_request_schemas(app: FastAPI, document: dict[str, Any]) -> None:
    """The request bodies' schemas as pydantic writes them, numbers exact (see the top): the
    body models' components, and what routes add to their operations (multipart forms)."""
    routes = _api_routes(app)
    bodies = {model for route in routes for field in route.dependant.body_params
              for model in _models_in(field.field_info.annotation)}
    _, definitions = models_json_schema([(model, "validation") for model in bodies],
                                        ref_template=_REF)
    schemas = document["components"]["schemas"]
    schemas.update({name: schema for name, schema in definitions.get("$defs", {}).items()
                    if name in schemas})
    for route in routes:
        if route.openapi_extra:  # each part whole (the multipart forms' requestBody)
            for method in route.methods:
                document["paths"][route.path_format][method.lower()].update(
                    copy.deepcopy(route.openapi_extra))


def statuses(operation: dict[str, Any], key: tuple[str, str], guarded: bool) -> list[int]:
    """The error statuses an operation answers."""
    found = set(ROUTE_ERRORS.get(key, ()))
    if operation.get("parameters") or "requestBody" in operation:
        found.add(400)
    if key[0] in _BODY_METHODS:
        found.add(413)  # fleet.api.fast_routes caps every body
    if guarded:
        found |= {401, 403}
    return sorted(found)


def _document_errors(operation: dict[str, Any], key: tuple[str, str], guarded: bool) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    for status in statuses(operation, key, guarded):
        response: dict[str, Any] = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": {"schema": {"$ref": _REF.format(
                model=_error_model(key[1]))}}}}
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[str(status)] = response


def _document_answer(operation: dict[str, Any], model: type[BaseModel],
                     chunk: type[BaseModel] | None, named: bool = False) -> None:
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}
    if chunk is not None:
        content["text/event-stream"] = (_named_stream if named else _stream)(chunk)
    operation["responses"]["200"] = {"description": "Successful Response", "content": content}
