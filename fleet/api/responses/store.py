"""The stored responses as the API process sees them: kept in the cluster's database
(fleet.database.responses), written off the event loop by one writer thread, so that an answer
never waits for its write and the writes land in the order they were made.

A response is found the moment it is answered: until its write has landed it is read from
memory (`_pending`), so a client that chains its next request at once (`previous_response_id`)
finds it. A delete goes through the same writer, after any write of the same response, and a
response being deleted is not found meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter

from fleet.api.protocol.openai_responses import InputItem, MessageItem, ResponsesRequest
from fleet.api.responses.answer import new_id
from fleet.database.engine import Database
from fleet.database.responses import DatabaseResponses, ResponseRecord
from fleet.errors import NotFound
from fleet.settings import responses_max_age_days, responses_max_stored

logger = logging.getLogger(__name__)

_ITEMS: TypeAdapter[list[Any]] = TypeAdapter(list[InputItem])
_ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_",
                "reasoning": "rs_"}


class ResponseStore:
    def __init__(self, responses: DatabaseResponses):
        self._db = responses
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-responses")
        self._pending: dict[str, ResponseRecord] = {}
        self._deleting: set[str] = set()

    def keep(self, body: ResponsesRequest, response: dict[str, Any],
             history: list[dict[str, Any]]) -> None:
        """Keeps `response`, the answer to `body` after the conversation `history`."""
        inputs = [stored_item(item) for item in body.input_items]
        record = ResponseRecord(response["id"], body.model, response, inputs,
                                [*history, *inputs, *response["output"]])
        self._pending[record.id] = record
        self._writer.submit(self._db.save, record).add_done_callback(
            lambda done: self._written(record.id, done))

    def _written(self, response_id: str, done: Future) -> None:
        self._pending.pop(response_id, None)
        if done.exception() is not None:
            logger.warning("response %s could not be stored: %r", response_id,
                           done.exception())

    async def find(self, response_id: str) -> ResponseRecord | None:
        if response_id in self._deleting:
            return None
        record = self._pending.get(response_id)
        if record is not None:
            return record
        return await asyncio.get_running_loop().run_in_executor(None, self._db.find,
                                                                response_id)

    async def delete(self, response_id: str) -> bool:
        pending = self._pending.pop(response_id, None) is not None
        self._deleting.add(response_id)
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                self._writer, self._db.delete, response_id)
        finally:
            self._deleting.discard(response_id)
        return found or pending

    def close(self) -> None:
        """Waits for the writes under way (a stopping server keeps what it answered)."""
        self._writer.shutdown(wait=True)


def response_store(db: Database) -> ResponseStore:
    """The store of a cluster's database, bounded as the settings say."""
    return ResponseStore(DatabaseResponses(db, responses_max_stored(),
                                           timedelta(days=responses_max_age_days())))


async def conversation(store: ResponseStore | None, response_id: str,
                       check_model: Callable[[str], None] | None = None,
                       ) -> tuple[list[dict[str, Any]], list[Any]]:
    """The items of the conversation that `response_id` ended: as kept, and typed as input
    items. `check_model` raises when the request may not read a response of the record's
    model."""
    record = await store.find(response_id) if store is not None else None
    if record is None:
        raise not_found(response_id, store)
    if check_model is not None:
        check_model(record.model)
    return record.conversation, _ITEMS.validate_python(record.conversation)


def not_found(response_id: str, store: ResponseStore | None) -> NotFound:
    if store is None:
        return NotFound(f"response {response_id!r} not found: this server keeps no responses "
                        "(it has no database)", code="response_not_found")
    return NotFound(f"response {response_id!r} not found (never stored, deleted, or past its "
                    "time)", code="response_not_found")


def stored_item(item: Any) -> dict[str, Any]:
    """An input item as it is kept and listed: with an id, and a message's text as parts."""
    data: dict[str, Any] = item.model_dump(exclude_none=True, by_alias=True)
    if isinstance(item, MessageItem):
        assistant = item.role == "assistant"
        if isinstance(item.content, str):
            data["content"] = [{"type": "output_text" if assistant else "input_text",
                                "text": item.content}]
        if assistant:
            data.setdefault("status", "completed")
            for part in data["content"]:
                if part["type"] == "output_text":
                    part.setdefault("annotations", [])
    data.setdefault("id", new_id(_ID_PREFIXES[data["type"]]))
    return data
