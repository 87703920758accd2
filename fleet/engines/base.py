"""The engine boundary: what each engine declares, and the protocol per ability.

Every engine is built as `Engine(model_path, family, device, options)`, where `options` is its
implementation's own launch-options model (EngineInfo.options_model), or None for every
default; the constructor checks it with checked_options and loads nothing (`load` does). The
protocols below declare that parameter as any LaunchOptions: each implementation narrows it to
its own model, which mypy allows because it leaves `__init__` out of protocol matching."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np

from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.engines.launch_options import LaunchOptions, RemoteCodeOptions, parse_options
from fleet.errors import BadRequest
from fleet.generation.detokenizer import TokenDecoder
from fleet.generation.params import NewSequence, TokenChoice
from fleet.generation.scheduling import Scheduler
from fleet.install_hint import pip_install_extra


@dataclass(frozen=True)
class MemoryProfile:
    """What an engine adds to a model's weights and KV cache: the inputs of the will-it-fit
    estimate (fleet/cluster/supervisor/memory_estimate.py)."""

    # The runtime itself: its libraries in the replica's process, work buffers, and on a GPU the
    # CUDA context. Measured as the resident memory of a replica process before any weights.
    overhead_mib: int = 512
    # The dtype the engine loads unquantized weights in, per device; None: as the files store them.
    cpu_dtype: str | None = None
    gpu_dtype: str | None = None
    # The dtype of its KV cache; None: the weights' dtype.
    kv_dtype: str | None = None
    # One KV cache pool shared by the parallel sequences (llama.cpp's unified cache): it holds
    # the context length in tokens however many sequences run, instead of one context each.
    shared_cache: bool = False
    # Full-length sequences the KV cache is counted for when the launch names no max_num_seqs
    # (n_parallel) and the cache is not shared: 1, the one full-length request any engine must
    # be able to hold.
    default_sequences: int = 1
    # A KV cache reserved whole at load on a CPU (vLLM-CPU's): this launch option, in GiB, else
    # cpu_kv_default_gib; the estimate counts that, whatever the context and sequences.
    cpu_kv_option: str = ""
    cpu_kv_default_gib: int = 0


@dataclass(frozen=True)
class EngineInfo:
    """What an engine can run, declared without importing the engine's library."""

    name: str
    formats: tuple[str, ...]
    abilities: tuple[str, ...]
    # Python modules that must be importable for the engine to work.
    requires: tuple[str, ...]
    # model type -> "module:Class" of the implementation, imported in the model process only.
    implementations: dict[str, str]
    # Lower is preferred when several engines match.
    priority: int = 100
    pip_extra: str = ""
    # Rerank families come as cross-encoders ("normal") or causal LMs ("LLM-based").
    rerank_kinds: tuple[str, ...] = ()
    # Engines that only run on a GPU: never chosen for a machine without one.
    needs_gpu: bool = False
    # Engines chosen automatically only for a machine with a GPU, and run elsewhere only when
    # named (vLLM: its CPU build serves, but the Transformers engine is the better default there).
    auto_only_on_gpu: bool = False
    memory: MemoryProfile = MemoryProfile()
    # model type -> the launch options that implementation reads (fleet.engines.launch_options).
    launch_options: dict[str, type[LaunchOptions]] = field(default_factory=dict)

    def options_model(self, model_type: str) -> type[LaunchOptions]:
        """The typed launch options for `model_type` (none at all when it declares none)."""
        return self.launch_options.get(model_type, LaunchOptions)

    def typed_options(self, model_type: str, options: Mapping[str, Any]) -> LaunchOptions:
        """The engine options of a launch request (its keys beyond the launch's own) as the
        model the implementation for `model_type` takes; BadRequest naming an unknown or
        invalid one, as at launch planning."""
        return parse_options(self.options_model(model_type), options,
                             f"engine {self.name} ({model_type} models)")

    def missing_modules(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def why_not(self, family: BaseFamily, spec: ModelSpec | None = None,
                has_gpu: bool | None = None) -> str | None:
        """None when this engine can run the family (and spec) on a machine with (has_gpu) or
        without a GPU (None: not known, not checked); otherwise the reason."""
        return self.cannot_run(family, spec) or self.unavailable(has_gpu)

    def cannot_run(self, family: BaseFamily, spec: ModelSpec | None = None) -> str | None:
        """Why the engine does not run this kind of model (type, reranker kind, abilities,
        weight format), or None."""
        if family.model_type not in self.model_types:
            return f"runs {'/'.join(self.model_types)} models, not {family.model_type}"
        kind = getattr(family, "type", None)
        if family.model_type == "rerank" and kind not in self.rerank_kinds:
            return f"runs {'/'.join(self.rerank_kinds) or 'no'} rerankers, the model is {kind}"
        if not set(family.abilities) & set(self.abilities):
            return f"supports {', '.join(self.abilities)}, the model needs {', '.join(family.abilities)}"
        specs = [spec] if spec else family.model_specs
        if not any(s.model_format in self.formats for s in specs):
            formats = ", ".join(sorted({s.model_format for s in specs}))
            return f"runs {', '.join(self.formats)} weights, the model has {formats}"
        return None

    def unavailable(self, has_gpu: bool | None = None) -> str | None:
        """Why the engine cannot run here (its library is missing, it needs a GPU), or None."""
        missing = self.missing_modules()
        if missing:
            needed = ", ".join(missing)
            return f"not installed (missing {needed}): {pip_install_extra(self.pip_extra)}"
        if self.needs_gpu and has_gpu is False:
            return "needs a GPU, the worker has none"
        return None

    @property
    def model_types(self) -> tuple[str, ...]:
        return tuple(self.implementations)

    def load_class(self, model_type: str) -> type:
        module_name, class_name = self.implementations[model_type].split(":")
        return getattr(importlib.import_module(module_name), class_name)


_Options = TypeVar("_Options", bound=LaunchOptions)


def checked_options(options: object, model: type[_Options]) -> _Options:
    """What an engine's constructor does first with its launch options: `model()` (every
    default) for None, the options themselves when they are exactly `model`, else TypeError.
    A dict, or another engine's model (a subclass included), would hand the engine names it
    does not read, or miss those it does, with no error."""
    if options is None:
        return model()
    if isinstance(options, model) and type(options) is model:
        return options
    raise TypeError(f"launch options must be {model.__name__} (validated by "
                    f"EngineInfo.typed_options), not {type(options).__name__}")


def wants_remote_code(family: BaseFamily, options: RemoteCodeOptions) -> bool:
    """Run a model repository's own Python only when the launch or the catalogue asks for it."""
    if options.trust_remote_code is not None:
        return options.trust_remote_code
    return bool(getattr(family, "trust_remote_code", False))


EmbeddingInput = str | list[int]


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # float32, shape (n_inputs, dimensions)
    token_counts: list[int]  # tokens the model read, per input


class EmbeddingEngine(Protocol):
    """Turns texts (or token ids) into vectors."""

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    def load(self) -> None: ...

    @property
    def dimensions(self) -> int: ...  # the length of each vector

    @property
    def max_tokens(self) -> int: ...  # the longest input, in tokens

    def count_tokens(self, text: str) -> int: ...

    def embed(self, inputs: list[EmbeddingInput]) -> EmbeddingResult: ...

    def close(self) -> None: ...


@dataclass
class RerankResult:
    scores: list[float]  # relevance per (query, document) pair, higher is more relevant
    token_counts: list[int]


class RerankEngine(Protocol):
    """Scores (query, document) pairs."""

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    def load(self) -> None: ...

    def score(self, pairs: list[tuple[str, str]]) -> RerankResult: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ImagePrompt:
    """A chat prompt with images, as a vision engine reads it: the token ids (an image's tokens
    in its place, so their count is the prompt's usage) and `media`, the engine's own inputs for
    the images (pixel values...), handed back to the engine with the sequence."""

    ids: list[int]
    media: Any


class ReadsNoImages:
    """The image side of an LLM engine (BaseLLMEngine) that is given no images: a model that
    does not see, or an engine that cannot show it any."""

    reads_images = False
    image_marker: str | None = None

    def encode_with_images(self, text: str, images: list[bytes]) -> ImagePrompt:
        raise BadRequest("this model reads text only: it cannot take an image", code="no_vision")


class BaseLLMEngine(Protocol):
    """What every chat/completion engine gives the replica's LLM service
    (fleet.cluster.replica.services.llm): it renders prompts with the family's (or `chat_template`, the
    model's own) template and `template_tokens`, tokenizes them with `encode`, and checks
    requests against `context_length` (per sequence) and `vocab_size`. These prompt-side members
    are called off the engine thread (a request is prepared in a thread of its own while others
    generate), so they only read: the model's tokenizer and metadata, nothing that generation
    changes. Generation itself takes one of two forms, declared by `scheduling`: a
    StepwiseLLMEngine or a SelfSchedulingLLMEngine."""

    # Who batches the engine's sequences: "fleet" (Fleet's own loop calls the engine a step at a
    # time) or "engine" (the engine batches by itself and brings its scheduler). Declared by each
    # engine class rather than worked out from the methods it happens to have, so that mypy
    # narrows an LLMEngine to the one protocol from the value, and an engine that means one form
    # but misses a method of it fails the type check instead of being taken for the other form.
    scheduling: ClassVar[Literal["fleet", "engine"]]
    context_length: int
    vocab_size: int
    # Whether the loaded model reads images in a chat (a vision model with its processor or
    # projector); only then is `encode_with_images` called.
    reads_images: bool
    # How an image's place reaches the chat template. None: as a `{"type": "image"}` content
    # part, which the template writes as the model's image token(s) (Hugging Face processors'
    # templates do); a string: that text in place of the part, which the engine finds in the
    # rendered prompt (llama.cpp's media marker).
    image_marker: str | None

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    def load(self) -> None: ...

    @property
    def chat_template(self) -> str | dict[str, str] | None: ...

    @property
    def template_tokens(self) -> dict[str, str]: ...

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def stop_token_ids(self, family_stops: list[str], family_stop_ids: list[int]) -> tuple[int, ...]:
        """The ids that end a sequence, beyond those the engine stops on by itself."""
        ...

    def encode_with_images(self, text: str, images: list[bytes]) -> ImagePrompt:
        """A rendered chat prompt that holds images (encoded, in their order in the prompt):
        its token ids, each image's tokens in place, and the engine's inputs for the images.
        Called off the engine thread, as `encode`."""
        ...


class StepwiseLLMEngine(BaseLLMEngine, Protocol):
    """An engine that Fleet schedules: fleet.cluster.replica.generation_scheduler.GenerationScheduler
    owns the running batch and calls, on the engine thread only, `prefill` (new sequences join
    the batch, their first token sampled), `decode` (one more token for every running sequence,
    in the order they joined) and `release` (finished or cancelled sequences leave). Sampling,
    including each sequence's grammar, is the engine's (see fleet.engines.transformers_llm)."""

    scheduling: ClassVar[Literal["fleet"]]
    # Read for the streamed text (fleet.generation.detokenizer) and the logprobs' tokens.
    tokenizer: TokenDecoder

    def prefill(self, sequences: Sequence[NewSequence]) -> list[TokenChoice]: ...

    def decode(self) -> list[TokenChoice]: ...

    def release(self, seq_ids: Sequence[int]) -> None: ...


class SelfSchedulingLLMEngine(BaseLLMEngine, Protocol):
    """An engine that batches its sequences by itself (llama.cpp's server slots, see
    fleet.engines.llamacpp_llm): it brings the scheduler that feeds it. The replica runs that
    scheduler's `run_forever` on the engine thread; the scheduler alone calls the engine from
    then on, and may run threads of its own inside it."""

    scheduling: ClassVar[Literal["engine"]]

    def make_scheduler(self, max_running: int, max_requests: int) -> Scheduler:
        """A scheduler that runs at most `max_running` sequences together and holds at most
        `max_requests` requests (TooManyRequests past that)."""
        ...


# What the replica's LLM service holds: `engine.scheduling` tells which of the two it is.
LLMEngine = StepwiseLLMEngine | SelfSchedulingLLMEngine


@dataclass
class ImageJob:
    """One pipeline call of an image engine: `len(prompts)` images made together, each from its
    own seed, with the settings they share (requests are grouped by those settings)."""

    operation: str  # "text2image", "image2image" or "inpainting"
    prompts: list[str]
    negative_prompts: list[str] | None
    seeds: list[int]
    width: int
    height: int
    # The pipeline's own arguments: num_inference_steps, guidance_scale, strength and any
    # further ones a request passed (already checked against the pipeline, see ImageEngine).
    arguments: dict[str, Any]
    images: list[Any] | None = None  # PIL images, image2image and inpainting
    masks: list[Any] | None = None  # PIL images, inpainting


class ImageEngine(Protocol):
    """Diffusion pipelines (fleet.engines.diffusers_image)."""

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    @property
    def size_multiple(self) -> int: ...  # each side of an image is a multiple of this

    @property
    def default_size(self) -> tuple[int, int]: ...

    def operations(self) -> frozenset[str]: ...

    def accepted_arguments(self, operation: str) -> frozenset[str]: ...

    def takes(self, operation: str, argument: str) -> bool: ...  # any argument of the pipeline

    def load(self) -> None: ...

    def generate(self, job: ImageJob, on_step: Any) -> list[Any]: ...  # PIL images, in order


@dataclass
class OCRLine:
    text: str
    score: float  # the recogniser's confidence, 0 to 1
    box: list[list[float]]  # the four corners, in pixels, clockwise from the top left


class OCREngine(Protocol):
    """Text from images (fleet.engines.rapidocr_ocr)."""

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    def load(self) -> None: ...

    def read(self, image: Any, options: dict[str, float]) -> list[OCRLine]: ...


@dataclass(frozen=True)
class TranscriptionSettings:
    """What the chunks of one engine call share (requests are grouped by them)."""

    task: str  # "transcribe", or "translate" (to English)
    language: str | None  # None: the engine's default (English-only models) or detected
    prompt: str | None  # text that came before, to steer spelling and style
    temperature: float
    word_timestamps: bool
    segment_timestamps: bool  # timestamps within a chunk (finer segments), or one per chunk


@dataclass
class AudioChunk:
    """Up to 30 s of speech, ready for the model (`features`: the engine's own input)."""

    features: Any
    offset: float  # seconds from the start of the audio the engine kept (after VAD)
    duration: float


@dataclass
class PreparedAudio:
    """An upload cut into chunks by an engine's `prepare`; `timeline` is the engine's own
    record of what it cut out, to put times back on the upload's clock (`finish`)."""

    chunks: list[AudioChunk]
    duration: float  # seconds of the whole upload
    timeline: Any = None


@dataclass
class TranscriptWord:
    word: str
    start: float
    end: float
    probability: float


@dataclass
class TranscriptSegment:
    """OpenAI's verbose_json segment."""

    id: int
    start: float
    end: float
    text: str
    tokens: list[int] = field(default_factory=list)
    temperature: float = 0.0
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    words: list[TranscriptWord] | None = None


class TranscriptionEngine(Protocol):
    """Speech to text (fleet.engines.faster_whisper_stt, fleet.engines.transformers_whisper).
    The replica's TranscriptionService cuts each upload into chunks with `prepare` (any
    thread), and batches the chunks of every request it holds into `decode` calls (the
    engine thread), grouped by their TranscriptionSettings; `finish` puts the segments' times
    back on the upload's clock."""

    sample_rate: int
    multilingual: bool
    languages: frozenset[str]  # the codes `language` may be ("en", "de"...)
    gives_word_timestamps: bool

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    def load(self) -> None: ...

    def prepare(self, audio: np.ndarray) -> PreparedAudio: ...

    def detect_language(self, prepared: PreparedAudio) -> str: ...  # the engine thread

    def decode(self, settings: TranscriptionSettings,
               chunks: list[AudioChunk]) -> list[list[TranscriptSegment]]:
        """The segments of each chunk, times from the start of the kept audio; the engine
        thread. Raises ValueError for settings the model refuses (a prompt too long)."""
        ...

    def finish(self, prepared: PreparedAudio,
               segments: list[TranscriptSegment]) -> list[TranscriptSegment]: ...


class SpeechEngine(Protocol):
    """Text to speech (fleet.engines.piper_tts, fleet.engines.kokoro_tts)."""

    sample_rate: int

    def __init__(self, model_path: str, family: BaseFamily, device: str | None,
                 options: LaunchOptions | None = None): ...

    def load(self) -> None: ...

    def voices(self) -> list[str]: ...  # the model's own voice names, the default first

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[np.ndarray]:
        """Mono float32 samples in [-1, 1], a piece at a time (a sentence), so that the first
        piece can be sent before the last is made. Each `next` runs on the engine thread."""
        ...
