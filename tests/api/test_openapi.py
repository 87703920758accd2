"""The OpenAPI document says what the server answers: no 422 (it answers 400), every route's
error statuses with one error schema, the main answers' schemas, streams as text/event-stream,
401/403 only where keys guard a route, and a 405 that carries Allow. Built in-process (no
cluster is needed to describe the routes); tests/e2e/test_openapi_fuzz.py holds a running
server to the document."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from fleet.api.app import create_app
from fleet.api.auth.keys import hash_key
from fleet.api.auth.permissions import app_routes
from fleet.api.openapi import ROUTE_ERRORS
from fleet.server_config import ServerConfig

ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}
# The Messages routes answer in Anthropic's shape (fleet.api.anthropic.errors).
ANTHROPIC_PATHS = ("/v1/messages", "/v1/messages/count_tokens")
ANTHROPIC_ERROR_REF = {"$ref": "#/components/schemas/AnthropicErrorResponse"}


def _fastapi(app: Any) -> Any:
    while not hasattr(app, "openapi"):
        app = app._app
    return app


def _document(config: ServerConfig | None = None) -> dict[str, Any]:
    return _fastapi(create_app(None, "127.0.0.1:1", config)).openapi()


def _operations(document: dict[str, Any]):
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            yield method.upper(), path, operation


def test_every_route_has_its_statuses_declared_in_the_table():
    app = _fastapi(create_app(None, "127.0.0.1:1"))
    documented = {(m, p) for m, p, _ in _operations(app.openapi())}
    routes = {(method, path) for path, methods in app_routes(app) for method in methods
              if (method, path) in documented}
    assert routes == documented  # the document describes the app's routes
    assert documented == set(ROUTE_ERRORS), "a route without an entry in ROUTE_ERRORS"


def test_no_422_and_every_error_has_the_error_schema():
    document = _document()
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        for status, response in responses.items():
            if status != "200":
                assert response["content"]["application/json"]["schema"] == (
                    ANTHROPIC_ERROR_REF if path in ANTHROPIC_PATHS else ERROR_REF)
        takes_input = "requestBody" in operation or operation.get("parameters")
        assert ("400" in responses) == bool(takes_input), (method, path)
        assert ("413" in responses) == (method in ("POST", "PUT", "PATCH", "DELETE")), (method, path)
        assert "401" not in responses  # no keys: nothing answers 401


def test_the_main_answers_have_schemas_and_streams_are_event_streams():
    document = _document()
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorResponse"]["required"]) == {"error", "detail"}
    paths = document["paths"]
    chat = paths["/v1/chat/completions"]["post"]["responses"]
    assert chat["200"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletion")
    assert "text/event-stream" in chat["200"]["content"]
    assert "text/event-stream" in paths["/v1/completions"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" not in paths["/v1/embeddings"]["post"]["responses"]["200"]["content"]
    for path, model in [("/v1/embeddings", "EmbeddingResponse"), ("/v1/rerank", "RerankResponse")]:
        answer = paths[path]["post"]["responses"]["200"]["content"]["application/json"]
        assert answer["schema"]["$ref"].endswith(model)
    listed = paths["/v1/models"]["get"]["responses"]["200"]["content"]["application/json"]
    assert listed["schema"]["$ref"].endswith("ModelList")
    messages = paths["/v1/messages"]["post"]["responses"]["200"]["content"]
    assert messages["application/json"]["schema"]["$ref"].endswith("AnthropicMessage")
    events = messages["text/event-stream"]["schema"]
    assert events["required"] == ["event", "data"] and "message_start" in events["properties"][
        "event"]["enum"]
    responses = paths["/v1/responses"]["post"]["responses"]["200"]["content"]
    assert responses["application/json"]["schema"]["$ref"].endswith("ResponseObject")
    events = responses["text/event-stream"]["schema"]
    assert events["required"] == ["event", "data"] and "response.completed" in events[
        "properties"]["event"]["enum"]
    counted = paths["/v1/messages/count_tokens"]["post"]["responses"]["200"]["content"]
    assert counted["application/json"]["schema"]["$ref"].endswith("AnthropicTokenCount")
    assert set(schemas["AnthropicErrorResponse"]["required"]) == {"type", "error"}
    busy = chat["429"]
    assert busy["headers"]["Retry-After"]["required"] is True
    # The server's own limits are documented where they are schema constraints.
    request = schemas["ChatCompletionRequest"]["properties"]
    assert request["n"]["maximum"] == 16 and request["messages"]["maxItems"] == 2048


def test_with_keys_the_guarded_routes_document_401_and_403():
    document = _document(ServerConfig(api_key_hashes=(hash_key("k" * 32),)))
    for method, path, operation in _operations(document):
        guarded = path not in ("/status", "/v1/cluster/auth")
        assert ("401" in operation["responses"]) == guarded, (method, path)
        assert ("403" in operation["responses"]) == guarded, (method, path)
        if guarded:
            assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/v1/models/some-uid", "DELETE, GET"),
    ("OPTIONS", "/v1/cache/models", "DELETE, GET"),
    ("PATCH", "/v1/models", "GET, POST"),
    ("GET", "/v1/embeddings", "POST"),  # answered by the lean front for POST only
    ("PUT", "/v1/models/estimate", "GET"),  # its own route, before /v1/models/{model_uid}
])
def test_405_names_every_method_of_the_path(method, path, allowed):
    response = TestClient(create_app(None, "127.0.0.1:1"), base_url="http://localhost").request(method, path)
    assert response.status_code == 405 and response.headers["allow"] == allowed
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def _integer_bounds(node: Any) -> list[Any]:
    if isinstance(node, dict):
        own = [v for k, v in node.items() if k in ("minimum", "maximum")
               if node.get("type") == "integer"]
        return own + [n for v in node.values() for n in _integer_bounds(v)]
    return [n for v in node for n in _integer_bounds(v)] if isinstance(node, list) else []


def test_numbers_are_exact():
    """FastAPI reads its document into a model whose bounds are floats: 2**63 - 1 came out as
    9.223372036854776e18, which is 2**63, a seed the server refuses."""
    document = _document()
    schemas = document["components"]["schemas"]
    seed = schemas["ImageGenerationRequest"]["properties"]["seed"]["anyOf"][0]
    assert seed["maximum"] == 2**63 - 1 and isinstance(seed["maximum"], int)
    chat_seed = schemas["ChatCompletionRequest"]["properties"]["seed"]["anyOf"][0]
    assert (chat_seed["minimum"], chat_seed["maximum"]) == (-(2**63), 2**63 - 1)
    form = _form(document, "/v1/images/variations")
    assert form["properties"]["seed"]["maximum"] == 2**63 - 1
    bounds = _integer_bounds(document)
    assert bounds and all(isinstance(n, int) for n in bounds)


def _form(document: dict[str, Any], path: str) -> dict[str, Any]:
    return document["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"]


@pytest.mark.parametrize("path", ["/v1/images/edits", "/v1/images/variations",
                                  "/v1/images/inpainting", "/v1/images/ocr",
                                  "/v1/audio/transcriptions", "/v1/audio/translations"])
def test_multipart_forms_say_what_a_form_can_send(path):
    """No null (a form leaves a field out; the text "null" is a string), no unknown fields (the
    forms refuse them), no empty file, and the image types the image routes read."""
    content = _document()["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
    form = content["schema"]
    assert form["additionalProperties"] is False
    assert "null" not in json.dumps(form)
    files = [name for name, field in form["properties"].items() if field.get("format") == "binary"]
    assert files and all(form["properties"][name]["minLength"] == 1 for name in files)
    if path.startswith("/v1/images"):
        assert {content["encoding"][name]["contentType"] for name in files} == {
            "image/png, image/jpeg, image/webp"}
        if "size" in form["properties"]:  # not OCR's
            assert form["properties"]["size"]["pattern"].startswith("^(auto|original|")


def test_the_rules_across_fields_are_in_the_document():
    document = _document()
    transcription = _form(document, "/v1/audio/transcriptions")
    assert transcription["anyOf"][1] == {
        "properties": {"timestamp_granularities": {"maxItems": 0}}}
    assert _form(document, "/v1/images/edits")["required"] == ["model", "prompt", "image"]
    assert _form(document, "/v1/images/inpainting")["required"] == ["model", "image",
                                                                     "mask_image"]


def test_the_routes_the_front_answers_are_documented_with_the_front_s_body_models():
    """One HotRoute is both the front's route and FastAPI's: the document shows each with the
    model the front validates against, under its operation's name."""
    from fleet.api.app import HOT_ROUTES

    operations = {(m, p): o for m, p, o in _operations(_document())}
    for route in HOT_ROUTES:
        operation = operations[("POST", route.path)]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{route.body_model.__name__}"}
        assert operation["operationId"].startswith(route.name)
    assert {r.path for r in HOT_ROUTES} == {
        "/v1/embeddings", "/v1/rerank", "/v1/chat/completions", "/v1/completions",
        "/v1/messages", "/v1/messages/count_tokens", "/v1/responses"}


def test_a_hot_route_reached_through_fastapi_answers_as_the_front_does():
    """Behind the front, FastAPI's copy of a hot route validates the same body the same way."""
    front = create_app(None, "127.0.0.1:1")
    fastapi_app = _fastapi(front)
    body = {"model": "m", "input": ""}
    answers = [TestClient(app, base_url="http://localhost").post("/v1/embeddings", json=body)
               for app in (front, fastapi_app)]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json()["error"]["message"] == answers[1].json()["error"]["message"]
