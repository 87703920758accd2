"""Chat and completion requests on one replica: turn an OpenAI body into a prompt and sampling
settings, hand it to the scheduler, and turn the token events that come back into OpenAI choice
chunks. The scheduler is Fleet's continuous-batching loop for step-wise engines, or the engine's
own when it batches by itself (`make_scheduler`, see fleet.engines.base); either way the
prompt is rendered and tokenized here, the same way for every engine.

A streamed request has a stream id. Its chunks are pushed to the API over the API's replica channel
(fleet.channel.replica_end) as they are made, by the engine's thread that made them, or, when the
API has no channel to this replica, polled (`next_chunks`): each poll returns everything produced
since the last one, so a slow reader gets tokens in bunches. A client that goes away is cancelled
explicitly (`cancel`), and a closed channel cancels the streams it carried, not garbage
collection."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Any

from fleet.admission import RequestLimits
from fleet.catalogue.schemas import LLMFamily
from fleet.channel.replica_end import ReplicaChannelServer
from fleet.cluster.replica.generation_scheduler import GenerationScheduler
from fleet.engines.base import LLMEngine
from fleet.engines.launch_options import LLMOptions
from fleet.errors import BadRequest, NotFound, Unavailable
from fleet.generation.chat_template import image_count, render_chat, with_image_markers
from fleet.generation.choice_output import ChatChoice, CompletionChoice
from fleet.generation.grammar import checked_grammar
from fleet.generation.openai_params import check_text_size, family_text_stops, sampling_params
from fleet.generation.scheduling import GenerationRequest, Scheduler
from fleet.generation.structured import Constraint, constraint_of
from fleet.generation.tool_calls import ToolFormat
from fleet.generation.tool_use import chat_input
from fleet.messages import (
    Events,
    GenerationCall,
    GenerationResult,
    JsonObject,
    StreamError,
    StreamFailed,
    StreamFrame,
    StreamStarted,
    TokenEvent,
    Usage,
)

DEFAULT_MAX_RUNNING = 32
# A stream nobody has polled for this long lost its reader (an API process that died).
ABANDONED_AFTER_S = 300.0


@dataclass(eq=False)
class _Stream:
    choices: list[ChatChoice] | list[CompletionChoice]
    prompt_tokens: int
    completion_tokens: int = 0
    chunks: list[JsonObject] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    done: bool = False
    error: StreamError | None = None
    streamed: bool = False
    polled_at: float = field(default_factory=time.monotonic)
    channel: str | None = None  # the API's replica channel the chunks are pushed to, if any
    # A pushed stream is fed in the engine's threads (one per choice on llama.cpp).
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, events: Events) -> None:
        for event in events:
            if isinstance(event, TokenEvent):
                choice = self.choices[event.index]
                chunk = choice.feed(event.text, event.logprobs)
                if chunk is not None:
                    self.chunks.append(chunk)
                if event.finish_reason is not None:
                    self.completion_tokens += event.completion_tokens
                    self.chunks.append(choice.finish(event.finish_reason, event.stop))
            elif isinstance(event, StreamFailed):
                self.error, self.done = event.error, True
            else:
                self.done = True

    def take(self, stream_id: str = "") -> StreamFrame:
        """The chunks made since the last take; `usage` or `error` once it is done."""
        chunks, self.chunks = self.chunks, []
        if not self.done:
            return StreamFrame(stream=stream_id, chunks=chunks)
        if self.error is not None:
            return StreamFrame(stream=stream_id, chunks=chunks, done=True, error=self.error)
        return StreamFrame(stream=stream_id, chunks=chunks, done=True, usage=self.usage)

    @property
    def usage(self) -> Usage:
        return Usage.of(self.prompt_tokens, self.completion_tokens)


@dataclass(frozen=True)
class _Prompt:
    """A request's prompt token ids, the grammar its answer follows, and, for a chat, how its
    answer is read: the reasoning tags and the tool call format (None: not looked for)."""

    ids: list[int]
    constraint: Constraint | None
    reasoning_tags: tuple[str, str, bool] | None = None
    tool_format: ToolFormat | None = None
    media: Any = None  # a vision engine's inputs for the chat's images (ImagePrompt.media)


class LLMService:
    def __init__(self, engine: LLMEngine, family: LLMFamily, model_uid: str, options: LLMOptions,
                 executor: Executor, channel_server: ReplicaChannelServer, limits: RequestLimits):
        """`options`: the launch's engine options (fleet.engines.launch_options), checked."""
        self._engine = engine
        self._family = family
        self._model_uid = model_uid
        self._stop_ids = engine.stop_token_ids(family.stop, family.stop_token_ids)
        self._text_stops = family_text_stops(
            lambda text: engine.encode(text, add_special_tokens=False), family.stop, self._stop_ids)
        # Whether the family's chat template renders tools (else: the generic tool format).
        self._native_tools = "tools" in family.abilities
        # Chat-template variables the launch set for every chat; a request's own win.
        self._template_defaults = ({} if options.enable_thinking is None
                                   else {"enable_thinking": options.enable_thinking})
        self._loop = asyncio.get_running_loop()
        max_running = options.max_num_seqs or DEFAULT_MAX_RUNNING
        max_requests = limits.max_requests
        # The engine declares who batches it (fleet.engines.base.BaseLLMEngine.scheduling).
        self.scheduler: Scheduler
        if engine.scheduling == "engine":
            self.scheduler = engine.make_scheduler(max_running, max_requests)
        else:
            self.scheduler = GenerationScheduler(engine, max_running=max_running,
                                                 max_requests=max_requests)
        # The scheduler owns the engine's thread from now on.
        self._loop_future = self._loop.run_in_executor(executor, self.scheduler.run_forever)
        self._streams: dict[str, _Stream] = {}
        self._channel_server = channel_server

    def close(self) -> None:
        self.scheduler.stop()

    # ---- building a request --------------------------------------------------------------
    def _chat_prompt(self, call: GenerationCall, constraint: Constraint | None
                     ) -> tuple[str, ToolFormat | None]:
        """The rendered prompt, and how tool calls are read from the answer (None: they are not).
        A family whose template renders tools gets them that way; any other chat model, Fleet's
        generic tool format (fleet.generation.tool_use)."""
        chat = chat_input(call, self._native_tools, constraint)
        if call.images and self._engine.image_marker is not None:
            chat = replace(chat, messages=with_image_markers(chat.messages,
                                                             self._engine.image_marker))
        template = self._family.chat_template or self._engine.chat_template
        template_kwargs = {**self._template_defaults, **(call.chat_template_kwargs or {})}
        prompt = render_chat(template, chat.messages, chat.tools, template_kwargs or None,
                             self._engine.template_tokens)
        return prompt, chat.tool_format

    def _completion_ids(self, prompt: str | list[str | int | list[int]] | None) -> list[int]:
        if isinstance(prompt, str):
            return self._engine.encode(prompt)
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            return self._engine.encode(prompt[0])
        ids = [t for t in prompt if isinstance(t, int)] if isinstance(prompt, list) else []
        if ids and len(ids) == len(prompt or ()):
            bad = [t for t in ids if not 0 <= t < self._engine.vocab_size]
            if bad:
                raise BadRequest(f"prompt token ids outside the vocabulary: {bad[:5]}")
            return ids
        raise BadRequest("prompt must be a string or a list of token ids; send several prompts "
                         "as several requests", code="unsupported_prompt")

    def _prompt(self, call: GenerationCall) -> _Prompt:
        """The request's prompt as the model reads it: rendered and tokenized once, the same way
        for an answer and for a count of its tokens (`count_tokens`)."""
        check_text_size(call, self._engine.context_length)  # before any rendering or tokenizing
        if call.kind == "chat":
            if "chat" not in self._family.abilities:
                raise BadRequest(f"model {self._model_uid} is not a chat model; use /v1/completions",
                                 code="chat_not_supported")
            self._check_images(call)
            constraint = constraint_of(call, generic_tools=not self._native_tools)
            text, tool_format = self._chat_prompt(call, constraint)
            media = None
            if call.images:
                image_prompt = self._engine.encode_with_images(text, call.images)
                ids, media = image_prompt.ids, image_prompt.media
            else:  # the template writes the special tokens (bos...) itself
                ids = self._engine.encode(text, add_special_tokens=False)
            prompt = _Prompt(ids, constraint, self._reasoning_tags(text), tool_format, media)
        else:
            prompt = _Prompt(self._completion_ids(call.prompt), constraint_of(call))
        if not prompt.ids:
            raise BadRequest("the prompt is empty", code="empty_prompt")
        return prompt

    def _check_images(self, call: GenerationCall) -> None:
        """The API sends a chat's images with one image part in the messages for each; only to
        a model that sees (fleet.api.chat_images checks that first, for a clear answer)."""
        parts = image_count(call.messages or [])
        if parts != len(call.images or ()):
            raise BadRequest(f"the messages hold {parts} image parts for "
                             f"{len(call.images or ())} images", code="invalid_image")
        if call.images and not self._engine.reads_images:
            raise BadRequest(f"model {self._model_uid} has no vision ability: it reads text "
                             "only, and cannot take an image", code="no_vision")

    def _prepare(self, stream_id: str, call: GenerationCall) -> tuple[GenerationRequest, _Stream]:
        n = call.n
        prompt = self._prompt(call)
        ids, constraint = prompt.ids, prompt.constraint
        choices: list[ChatChoice] | list[CompletionChoice]
        if call.kind == "chat":
            choices = [ChatChoice(i, prompt.reasoning_tags, prompt.tool_format) for i in range(n)]
        else:
            choices = [CompletionChoice(i) for i in range(n)]
        # Compiled here, before the request queues: a grammar the library refuses is a 400.
        grammar = checked_grammar(constraint) if constraint is not None else None
        params = sampling_params(call, len(ids), self._engine.context_length, self._stop_ids,
                                 self._engine.vocab_size, grammar, self._text_stops)
        stream = _Stream(choices=choices, prompt_tokens=len(ids))
        request = GenerationRequest(stream_id, ids, params, n,
                                    lambda events: self._deliver(stream_id, stream, events),
                                    prompt.media)
        return request, stream

    def _reasoning_tags(self, prompt: str) -> tuple[str, str, bool] | None:
        start, end = self._family.reasoning_start_tag, self._family.reasoning_end_tag
        if "reasoning" not in self._family.abilities or not start or not end:
            return None
        # DeepSeek-R1's template opens the think block itself: the answer starts inside it.
        return start, end, prompt.rstrip().endswith(start)

    # ---- serving -------------------------------------------------------------------------
    async def count_tokens(self, call: GenerationCall) -> int:
        """The tokens of the request's prompt, as an answer to it would read them (its usage's
        prompt tokens), without generating."""
        prompt = await asyncio.to_thread(self._prompt, call)  # off the loop, as in _submit
        return len(prompt.ids)

    async def _submit(self, call: GenerationCall, streamed: bool,
                      push: tuple[str, str] | None = None) -> tuple[str, _Stream]:
        self._forget_abandoned()
        channel, stream_id = push if push is not None else (None, uuid.uuid4().hex)
        if stream_id in self._streams:
            raise BadRequest(f"stream {stream_id} already exists")
        if channel is not None and not self._channel_server.has_channel(channel):
            raise Unavailable("the API's channel to this replica is closed")
        # Off the event loop: rendering and tokenizing a long prompt (llama.cpp's tokenizer is an
        # HTTP call) must not hold back the tokens of the streams already running.
        request, stream = await asyncio.to_thread(self._prepare, stream_id, call)
        stream.streamed, stream.channel = streamed, channel
        self.scheduler.submit(request)
        self._streams[stream_id] = stream
        return stream_id, stream

    async def complete(self, call: GenerationCall) -> GenerationResult:
        """A whole answer; the engine's error, with its kind, if it failed."""
        stream_id, stream = await self._submit(call, streamed=False)
        try:
            while not stream.done:
                stream.ready.clear()
                await stream.ready.wait()
        except asyncio.CancelledError:
            self.cancel(stream_id)
            raise
        self._streams.pop(stream_id, None)
        if stream.error is not None:
            raise stream.error.exception()
        return GenerationResult(choices=[c.result() for c in stream.choices], usage=stream.usage)

    async def start(self, call: GenerationCall,
                    push: tuple[str, str] | None = None) -> StreamStarted:
        """Start a streamed answer. With `push` = (channel, stream id chosen by the API), its
        chunks go to that replica channel; without, the API polls `next_chunks`."""
        stream_id, stream = await self._submit(call, streamed=True, push=push)
        return StreamStarted(stream_id, stream.prompt_tokens)

    def _deliver(self, stream_id: str, stream: _Stream, events: Events) -> None:
        """In the scheduler's thread. A pushed stream's chunks are made and sent right here:
        waking the event loop for each token cost the replica as much CPU as the API spends
        forwarding it. Other requests are read on the event loop, so their events go there."""
        if stream.channel is None:
            self._loop.call_soon_threadsafe(self._arrived, stream, events)
            return
        with stream.lock:  # one frame at a time, in the order the chunks were made
            stream.record(events)
            if not stream.chunks and not stream.done:
                return  # e.g. text held back while it may still become a stop string
            frame = stream.take(stream_id)
            sent = self._channel_server.send(stream.channel, frame)
        if not sent:
            self._loop.call_soon_threadsafe(self.cancel, stream_id)  # its reader is gone
        elif frame.done:
            self._loop.call_soon_threadsafe(self._streams.pop, stream_id, None)

    @staticmethod
    def _arrived(stream: _Stream, events: Events) -> None:
        stream.record(events)
        stream.ready.set()

    def channel_lost(self, channel: str) -> None:
        """The API behind `channel` has gone: nobody reads its streams any more."""
        for stream_id, stream in list(self._streams.items()):
            if stream.channel == channel:
                self.cancel(stream_id)

    async def next_chunks(self, stream_id: str) -> StreamFrame:
        """Chunk choices produced since the last poll (waiting for at least one); `usage` or
        `error` is set on the last poll of a stream."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise NotFound(f"no stream {stream_id} (finished, cancelled or never started)")
        stream.polled_at = time.monotonic()
        if not stream.chunks and not stream.done:
            stream.ready.clear()
            await stream.ready.wait()
        taken = stream.take(stream_id)
        if taken.error is not None and taken.chunks:
            # What was generated before the failure reaches the client first; the stream
            # keeps its error for the next poll.
            return StreamFrame(stream=stream_id, chunks=taken.chunks)
        if taken.done:
            self._streams.pop(stream_id, None)
        return taken

    def cancel(self, stream_id: str) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self.scheduler.cancel(stream_id)

    def _forget_abandoned(self) -> None:
        now = time.monotonic()
        for stream_id, stream in list(self._streams.items()):
            if stream.streamed and stream.channel is None and now - stream.polled_at > ABANDONED_AFTER_S:
                self.cancel(stream_id)

    @property
    def in_progress(self) -> int:
        """Answers (whole or streamed) not finished yet."""
        return len(self._streams)

    def stats(self) -> dict[str, int]:
        stats = self.scheduler.stats
        return {"last_size": stats.last_batch_size, "max_size": stats.max_batch_size_seen,
                "batches": stats.steps, "queued": stats.waiting, "running": stats.running}
