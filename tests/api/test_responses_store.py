"""The API process's store of the Responses API's responses (fleet.api.responses.store) on a
real database: a response is found the moment it is kept (before its write lands, from memory),
and in the database once written; a delete follows the write of the same response; a response
not kept, or deleted, is a 404 when a request continues it. With keys, a key reads a stored
response only if it may use the response's model."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from fleet.api.app import create_app
from fleet.api.auth.keys import KeyStore
from fleet.api.protocol.openai_responses import ResponsesRequest
from fleet.api.responses.store import ResponseStore, conversation
from fleet.database.responses import DatabaseResponses
from fleet.errors import NotFound
from fleet.server_config import ServerConfig


class _SlowResponses(DatabaseResponses):
    """Its writes wait for `release`: what a busy database does to the writer thread."""

    release = threading.Event()

    def save(self, record):  # type: ignore[no-untyped-def]
        assert self.release.wait(30)
        super().save(record)


def _body(**fields) -> ResponsesRequest:  # type: ignore[no-untyped-def]
    return ResponsesRequest.model_validate_json(orjson.dumps({"model": "m", **fields}))


def _answer(response_id: str, text: str) -> dict:
    return {"id": response_id, "object": "response", "output": [{
        "id": "msg_out", "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}]}]}


async def test_a_response_is_found_before_and_after_its_write(db):
    slow = _SlowResponses(db, 10, timedelta(days=1))
    slow.release.clear()
    store = ResponseStore(slow)
    store.keep(_body(input="Hi"), _answer("resp_1", "Hello"), [])
    assert DatabaseResponses(db, 10, timedelta(days=1)).find("resp_1") is None  # not written
    kept, typed = await conversation(store, "resp_1")  # found all the same
    assert [item["type"] for item in kept] == ["message", "message"]
    assert kept[0]["content"] == [{"type": "input_text", "text": "Hi"}] and kept[0]["id"]
    assert [item.role for item in typed] == ["user", "assistant"]
    slow.release.set()
    store.close()
    written = DatabaseResponses(db, 10, timedelta(days=1)).find("resp_1")
    assert written is not None and written.response == _answer("resp_1", "Hello")


async def test_a_later_turn_keeps_the_whole_conversation_and_a_delete_follows_the_write(db):
    store = ResponseStore(DatabaseResponses(db, 10, timedelta(days=1)))
    store.keep(_body(input="One"), _answer("resp_1", "1"), [])
    kept, _ = await conversation(store, "resp_1")
    store.keep(_body(input="Two", previous_response_id="resp_1"), _answer("resp_2", "2"), kept)
    assert await store.delete("resp_2") is True  # queued behind its own write
    with pytest.raises(NotFound, match="resp_2"):
        await conversation(store, "resp_2")
    assert await store.delete("resp_2") is False
    kept, _ = await conversation(store, "resp_1")
    assert len(kept) == 2
    store.close()
    with pytest.raises(NotFound, match="keeps no responses"):
        await conversation(None, "resp_1")


async def test_a_key_reads_only_the_responses_of_its_models(db, tmp_path: Path):
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"user_config": [
        {"username": "any", "permissions": ["models:read"], "api_keys": ["sk-any-model-key"]},
        {"username": "limited", "permissions": ["models:read"],
         "api_keys": [{"key": "sk-model-a-only", "models": ["model-a"]}]}]}))
    app = create_app(None, "127.0.0.1:1", ServerConfig(), KeyStore.build([], auth))
    fastapi_app = app
    while not hasattr(fastapi_app, "routes"):
        fastapi_app = fastapi_app._app
    store = ResponseStore(DatabaseResponses(db, 10, timedelta(days=1)))
    fastapi_app.state.cluster.responses = store
    store.keep(_body(model="model-b", input="Hi"), _answer("resp_b", "Hello"), [])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        def get(path: str, key: str):  # type: ignore[no-untyped-def]
            return client.get(path, headers={"Authorization": f"Bearer {key}"})

        for path in ("/v1/responses/resp_b", "/v1/responses/resp_b/input_items"):
            refused = await get(path, "sk-model-a-only")
            assert refused.status_code == 403 and "model-b" in refused.json()["error"]["message"]
            assert (await get(path, "sk-any-model-key")).status_code == 200
        deleting = await client.delete("/v1/responses/resp_b",
                                       headers={"Authorization": "Bearer sk-model-a-only"})
        assert deleting.status_code == 403
        # Nor may it continue one: its model's conversation would be read into the prompt.
        continuing = await client.post(
            "/v1/responses", headers={"Authorization": "Bearer sk-model-a-only"},
            json={"model": "model-a", "input": "And then?", "previous_response_id": "resp_b"})
        assert continuing.status_code == 403, continuing.text
        assert continuing.json()["error"]["code"] == "model_not_allowed"
        assert "model-b" in continuing.json()["error"]["message"]
        assert (await get("/v1/responses/resp_b", "sk-any-model-key")).status_code == 200
    store.close()
