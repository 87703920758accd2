"""The messages that cross between Fleet's processes, typed, in one module both ends import:
the launch of a replica (supervisor -> worker -> replica), a generation call (API -> replica),
the events a scheduler makes while it generates, and the frames that carry a stream's chunks
back to the API.

They are msgspec structs: cheaper to build than frozen dataclasses, and a received stream frame
is checked against its type as it is decoded, so a malformed frame is an error where it enters
instead of a KeyError further on. The hot messages (`GenerationCall`, `StreamFrame`) pickle as
their msgpack bytes when xoscar carries them, which costs less than pickling a struct's fields
(bench/messages_codec.py measures them against the dicts they replaced; docs/benchmarks.md)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.engines.launch_options import LaunchOptions
from fleet.errors import FleetError, Unavailable, error_fields, rebuild_error

GenerationKind = Literal["chat", "completion"]
JsonObject = dict[str, Any]


class _Packed(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A message that pickles as its msgpack bytes (see the module's docstring)."""

    def __reduce__(self) -> tuple[Any, ...]:
        try:
            return _unpack, (type(self), _ENCODER.encode(self))
        except OverflowError:
            # An integer beyond 64 bits somewhere in a client's JSON (a message's free-form
            # field): msgpack has no room for it, pickle has.
            return _unpack_fields, (type(self), msgspec.structs.asdict(self))


_ENCODER = msgspec.msgpack.Encoder()
_DECODERS: dict[type, msgspec.msgpack.Decoder[Any]] = {}


def _unpack_fields(kind: type, fields: dict[str, Any]) -> Any:
    return kind(**fields)


def _unpack(kind: type, data: bytes) -> Any:
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.msgpack.Decoder(kind)
    return decoder.decode(data)


# ---- the launch of a replica ------------------------------------------------------------------
class ReplicaLaunch(msgspec.Struct, frozen=True, kw_only=True):
    """What a worker needs to start one replica of a model, made by the supervisor
    (fleet.cluster.supervisor.replica_launcher.launch_payload). Pickled by xoscar as it is: the family, spec
    and options are the validated pydantic models, so the replica reads them typed."""

    model_uid: str
    family: BaseFamily
    spec: ModelSpec
    quantization: str
    model_engine: str
    # The engine's options, validated against its model when the launch was planned
    # (fleet.engines.launch_options); the engine receives this object.
    engine_options: LaunchOptions
    model_path: str | None = None
    n_gpu: int | str | None = "auto"
    # The GPUs to run on: those placement chose, else those the launch pinned (None: the
    # worker picks, as n_gpu says).
    gpu_idx: int | list[int] | None = None
    # Bytes placement promised the replica on each of its GPUs (its estimate split over them):
    # it may share them with other replicas, and an engine that takes a pool of a GPU's memory
    # (vLLM) is told this share. None: no estimate, the replica holds its GPUs whole.
    gpu_memory_bytes: int | None = None
    envs: dict[str, str] = msgspec.field(default_factory=dict)
    request_limits: int | None = None
    device: str = "cpu"  # set by the worker: "cuda" once it gave the replica GPUs
    # The launch request, kept by the worker and not read by the replica: reported when the
    # worker joins a supervisor again, it rebuilds the model's entry if the saved state lost it.
    request: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return self.family.model_type


# ---- a generation call: the API's validated request, as the replica reads it ------------------
class GenerationCall(_Packed, frozen=True, kw_only=True, omit_defaults=True):
    """A chat or completion request's fields (fleet.api.protocol.generation has validated their
    types and ranges), without those only the API uses (model, stream, user...). A field the
    client left out is None, as the engines' defaults apply then."""

    kind: GenerationKind
    # chat
    messages: list[JsonObject] | None = None
    tools: list[JsonObject] | None = None
    tool_choice: str | JsonObject | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: JsonObject | None = None
    # The chat's images, encoded (PNG, JPEG...) and checked by the API (fleet.api.chat_images),
    # in the order of the `{"type": "image"}` parts that stand for them in `messages`.
    images: list[bytes] | None = None
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    # completion: a text, or a list of texts, token ids or lists of ids (the replica serves a
    # text, one text in a list, or token ids)
    prompt: str | list[str | int | list[int]] | None = None
    # chat: whether to return logprobs; completion: how many alternatives (None: none)
    logprobs: bool | int | None = None
    # both
    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    response_format: JsonObject | None = None
    guided_json: JsonObject | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None


# ---- errors that keep their kind from the engine to the client's status code -----------------
class StreamError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A failure inside a stream: `kind` is the name of a Fleet error class (fleet.errors), so
    the API answers with that class's status and type; anything else an engine raises is an
    Unavailable (503), as asking again may work."""

    kind: str
    message: str
    code: str | None = None
    status: int = Unavailable.status_code

    @classmethod
    def of(cls, error: BaseException, context: str = "the engine failed") -> StreamError:
        if not isinstance(error, FleetError):
            error = Unavailable(f"{context}: {type(error).__name__}: {error}")
        kind, message, code, status = error_fields(error)
        return cls(kind=kind, message=message, code=code, status=status)

    def exception(self) -> FleetError:
        return rebuild_error(self.kind, self.message, self.code, self.status)


# ---- what a scheduler hands back while it generates -------------------------------------------
class TokenEvent(msgspec.Struct, frozen=True):
    """New text of choice `index`; its last event carries `finish_reason`, the choice's
    `completion_tokens` and, when a stop string ended it, that string (`stop`). `logprobs`:
    OpenAI's logprobs content entries of the new tokens."""

    index: int
    text: str
    logprobs: list[JsonObject] | None = None
    finish_reason: str | None = None
    completion_tokens: int = 0
    stop: str | None = None


class StreamDone(msgspec.Struct, frozen=True):
    """Every choice of the request has finished."""


class StreamFailed(msgspec.Struct, frozen=True):
    """The request ended with an error; no event follows."""

    error: StreamError


STREAM_DONE = StreamDone()
Event = TokenEvent | StreamDone | StreamFailed
Events = list[Event]


# ---- what the API reads of a stream -------------------------------------------------------------
class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt_tokens: int, completion_tokens: int) -> Usage:
        return cls(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class StreamFrame(_Packed, frozen=True, kw_only=True, omit_defaults=True):
    """The chunks of one stream made since the last frame (OpenAI choice chunks, ready for the
    client's envelope); the last frame has `done`, and `usage` or `error`. Pushed on the API's
    replica channel (`stream` names the stream there), or returned by a poll."""

    stream: str = ""
    chunks: list[JsonObject] = msgspec.field(default_factory=list)
    done: bool = False
    usage: Usage | None = None
    error: StreamError | None = None


class GenerationResult(_Packed, frozen=True, kw_only=True):
    """A whole answer: its OpenAI choices and the tokens read and written."""

    choices: list[JsonObject]
    usage: Usage

    def token_counts(self) -> tuple[int, int]:
        """(prompt, generated) tokens, as the API's metrics count a call (ReplicaRouter.call)."""
        return self.usage.prompt_tokens, self.usage.completion_tokens


class StreamStarted(msgspec.Struct, frozen=True):
    stream_id: str
    prompt_tokens: int

