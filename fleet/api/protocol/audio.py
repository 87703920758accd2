"""Request bodies of the audio routes, validated at the edge: the multipart form of OpenAI's
transcriptions and translations (as the openai SDK and xinference-client send it) and the JSON
body of speech. What depends on the model (its voices, languages, word timestamps) is the
replica's to check."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.api.protocol.fields import Flag
from fleet.errors import BadRequest
from fleet.limits import schema_max

TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
MAX_PROMPT_CHARS = 8192  # Whisper reads the last 224 tokens of a prompt; this is far past it


# Word and segment timestamps show only in verbose_json: asked for with another format, they
# are refused (OpenAI's rule), and the document says so.
# (Spelled as anyOf rather than if/then, which schemathesis' coverage phase cannot yet draw
# a form with a file for.)
_GRANULARITIES_NEED_VERBOSE_JSON = {"anyOf": [
    {"required": ["response_format"], "properties": {"response_format": {"const": "verbose_json"}}},
    {"properties": {"timestamp_granularities": {"maxItems": 0}}},
]}


class TranscriptionForm(BaseModel):
    """The text fields of /v1/audio/transcriptions and /v1/audio/translations."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(),
                              json_schema_extra=_GRANULARITIES_NEED_VERBOSE_JSON)

    model: str = Field(min_length=1)
    language: str | None = Field(default=None, max_length=16)
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    response_format: TranscriptFormat = "json"
    temperature: float = Field(default=0.0, ge=0.0, le=1.0)
    timestamp_granularities: list[Literal["segment", "word"]] = Field(default_factory=list)
    stream: bool = False
    # Accepted so that clients that always send them work: OpenAI's `chunking_strategy`
    # (chunks are always cut at silences here), `include` (logprobs: not given) and
    # xinference-client's `kwargs` (no further arguments are read).
    chunking_strategy: str | None = None
    include: list[str] = Field(default_factory=list)
    kwargs: str | None = None

    @field_validator("language", "prompt", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _granularities_need_verbose_json(self) -> TranscriptionForm:
        if self.timestamp_granularities and self.response_format != "verbose_json":
            raise BadRequest("timestamp_granularities needs response_format verbose_json",
                             code="invalid_timestamp_granularities")
        return self


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech`, and xinference-client's (`stream`, `kwargs`)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1)
    input: str = Field(json_schema_extra=schema_max("max_speech_chars"),
                       description="The text to speak (limit: FLEET_MAX_SPEECH_CHARS)")
    voice: str = Field(default="", max_length=200, description="The model's voice or one of "
                       "OpenAI's names (alloy, echo, ...); empty: the model's first voice")
    response_format: SpeechFormat = "mp3"
    speed: float = Field(default=1.0, ge=0.25, le=4.0)
    # OpenAI's `sse`: base64 audio in speech.audio.delta events; `audio`: the file's bytes.
    stream_format: Literal["audio", "sse"] = "audio"
    # The answer always streams as it is made; these are accepted for the clients that send
    # them (`instructions` steers OpenAI's gpt-4o voices; the voices served here take none).
    stream: Flag | None = None
    instructions: str | None = Field(default=None, max_length=8192)
    kwargs: str | None = None
