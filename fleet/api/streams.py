"""A streamed answer being read from one replica, with its metrics: time to first token, time
per output token, and the request's outcome, observed where the tokens leave for the client;
and `relay`, which runs such a stream to its end in the events of one API's dialect (OpenAI's
chunks, Anthropic's events), so that every dialect ends, fails and is cancelled the same way."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from xoscar.errors import ServerClosed

from fleet.api import metering
from fleet.api.errors import error_reply
from fleet.api.metrics import FleetMetrics
from fleet.channel.api_end import StreamInbox
from fleet.cluster.deadlines import within
from fleet.errors import FleetError, Unavailable
from fleet.messages import StreamFrame, Usage
from fleet.settings import request_timeout_s

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replica:
    ref: Any
    replica_uid: str
    worker: str
    # This process of the replica ("address/actor uid"): a restarted replica keeps its uid, not
    # its address, and must not inherit what the API noted about the process before it.
    key: str = ""


class ReplicaStream:
    def __init__(self, model: str, endpoint: str, replica: Replica, stream_id: str,
                 prompt_tokens: int, started: float, metrics: FleetMetrics,
                 inbox: StreamInbox | None = None):
        self.model = model
        self.endpoint = endpoint
        self.replica = replica
        self.stream_id = stream_id
        self.prompt_tokens = prompt_tokens
        self._started = started
        self._metrics = metrics
        self._inbox = inbox  # where the replica pushes the chunks; None: they are polled
        self._first_token_at: float | None = None
        self._closed = False

    async def next(self) -> StreamFrame:
        """The chunks made since the last call; `done` and `usage` at the end. The replica's own
        error for this answer is raised with its kind; Unavailable, saying what happened, if the
        replica stops in the middle (its process died, it hung)."""
        try:
            if self._inbox is not None:
                polled = await self._inbox.next(request_timeout_s())
            else:
                polled = await within(self.replica.ref.next_chunks(self.stream_id),
                                      request_timeout_s(), f"replica {self.replica.replica_uid}")
        except FleetError as exc:
            if not isinstance(exc, Unavailable) or (self._inbox is not None
                                                    and not self._inbox.lost):
                raise  # the replica's own error for this answer
            raise self._lost(exc.message) from None
        except (TimeoutError, ConnectionError, ServerClosed) as exc:
            raise self._lost(str(exc) or "no answer") from None
        if polled.error is not None:
            raise polled.error.exception()
        if polled.chunks and self._first_token_at is None:
            self._first_token_at = time.perf_counter()
            self._metrics.first_token(self.model, self._started)
        return polled

    def _lost(self, reason: str) -> Unavailable:
        return Unavailable(f"replica {self.replica.replica_uid} stopped in the middle of this "
                           f"stream ({reason}); the answer is incomplete", code="replica_lost")

    def finished(self, completion_tokens: int) -> None:
        self._closed = True
        metering.used_tokens(self.prompt_tokens, completion_tokens)
        self._metrics.request_finished(self.model, self.endpoint, self._started,
                                       self.replica.replica_uid, self.replica.worker,
                                       self.prompt_tokens, completion_tokens)
        if self._first_token_at is not None and completion_tokens > 1:
            per_token = (time.perf_counter() - self._first_token_at) / (completion_tokens - 1)
            self._metrics.time_per_output_token(self.model, per_token)

    def failed(self, kind: str) -> None:
        self._closed = True
        self._metrics.request_failed(self.model, self.endpoint, kind)

    def abandon(self) -> asyncio.Task | None:
        """The client left: stop generating for it. Runs as its own task, because the caller
        is usually being cancelled and could not await anything itself."""
        if self._inbox is not None:
            self._inbox.close()
        if self._closed:
            return None
        self.failed("client_disconnected")

        async def cancel() -> None:
            try:
                await within(self.replica.ref.cancel_stream(self.stream_id),
                             request_timeout_s(), f"replica {self.replica.replica_uid}")
            except Exception as exc:  # the replica may be gone already; nothing left to stop
                logger.debug("cancel of stream %s failed: %s", self.stream_id, exc)

        task = asyncio.get_running_loop().create_task(cancel())
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)
        return task


# Fire-and-forget tasks must be referenced until done, or the loop may drop them.
_PENDING: set[asyncio.Task] = set()


class StreamDialect(Protocol):
    """How one API writes a stream's events (see `relay`)."""

    def opening(self) -> Iterable[bytes]:
        """Before the first chunk."""
        ...

    def chunks(self, chunks: list[dict[str, Any]]) -> Iterable[bytes]:
        """The replica's chunk choices of one frame."""
        ...

    def closing(self, usage: Usage | None) -> Iterable[bytes]:
        """After the last chunk."""
        ...

    def failure(self, status: int, error: dict[str, Any]) -> Iterable[bytes]:
        """An error after the headers left: `status` and OpenAI's error object are what the
        request would have been answered before its stream began (fleet.api.errors)."""
        ...


class ChatChunkReader:
    """The walk over the replica's chat chunk choices that a dialect other than chat's makes:
    each choice's thought, text and tool calls, in that order, then its finish. A dialect
    writes its own events for each (`thought`, `text`, `tool_call`, `finished`)."""

    def chunks(self, chunks: list[dict[str, Any]]) -> list[bytes]:
        events: list[bytes] = []
        for choice in chunks:
            delta = choice["delta"]
            thought = delta.get("reasoning_content")
            if thought:
                self.thought(events, thought)
            text = delta.get("content")
            if text:
                self.text(events, text)
            for call in delta.get("tool_calls") or ():
                self.tool_call(events, call)
            if choice.get("finish_reason") is not None:
                self.finished(choice)
        return [b"".join(events)] if events else []

    def thought(self, events: list[bytes], text: str) -> None:
        raise NotImplementedError

    def text(self, events: list[bytes], text: str) -> None:
        raise NotImplementedError

    def tool_call(self, events: list[bytes], call: dict[str, Any]) -> None:
        raise NotImplementedError

    def finished(self, choice: dict[str, Any]) -> None:
        raise NotImplementedError


async def relay(stream: ReplicaStream, dialect: StreamDialect) -> AsyncGenerator[bytes, None]:
    """The stream's events in `dialect`, to its end; the stream's outcome in the metrics."""
    try:
        for event in dialect.opening():
            yield event
        while True:
            polled = await stream.next()
            for event in dialect.chunks(polled.chunks):
                yield event
            if polled.done:
                usage = polled.usage
                stream.finished(usage.completion_tokens if usage is not None else 0)
                for event in dialect.closing(usage):
                    yield event
                return
    except Exception as exc:
        # Headers are gone already: the error travels as an event. A replica that died or hung
        # is a FleetError already (ReplicaStream.next); anything else is Fleet's own fault, an
        # internal error as it would be before the headers.
        status, body, _ = error_reply(exc)
        stream.failed(body["error"]["type"])
        for event in dialect.failure(status, body["error"]):
            yield event
    finally:
        stream.abandon()  # a no-op after a normal end; cancels generation if the client left
