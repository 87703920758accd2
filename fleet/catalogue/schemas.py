"""Pydantic schemas of model families: the same JSON for the built-in catalogue and for custom
registrations, so that Xinference's custom-model files register here unchanged."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fleet.catalogue.audio_formats import local_audio_format
from fleet.catalogue.prompt_styles import PromptStyle, chat_format, check_style_fits
from fleet.catalogue.safe_names import (
    cache_folder_name,
    check_cache_folder_name,
    check_file_templates,
    check_model_name,
    check_quantizations,
    check_size,
)
from fleet.catalogue.xinference_format import canonical_format, convert_family, flat_spec
from fleet.paths import safe_relative_file, safe_segment

ModelType = Literal["LLM", "embedding", "rerank", "image", "audio"]
MODEL_TYPES: tuple[str, ...] = ("LLM", "embedding", "rerank", "image", "audio")


def normalize_model_type(value: str) -> str:
    """Accept `llm`, `Embedding`... as the canonical spelling that Xinference's API uses."""
    for canonical in MODEL_TYPES:
        if value.lower() == canonical.lower():
            return canonical
    raise ValueError(f"unknown model type {value!r}; expected one of {', '.join(MODEL_TYPES)}")


class ModelSpec(BaseModel):
    """One downloadable (or local) variant of a family: a format, a size, its quantizations."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_format: str = "pytorch"
    model_size_in_billions: int | float | str | None = None
    quantizations: list[str] = Field(default_factory=lambda: ["none"])
    model_id: str | None = None
    model_revision: str | None = None
    modelscope_model_id: str | None = None
    # GGUF repositories hold one file per quantization: "qwen2.5-7b-instruct-{quantization}.gguf".
    model_file_name_template: str | None = None
    # A model split over several files (Xinference's names): the template of one part's file
    # name, and the parts of each quantization.
    model_file_name_split_template: str | None = None
    quantization_parts: dict[str, list[str]] | None = None
    # A local folder (or file for GGUF), as a plain path or a file:// URI.
    model_uri: str | None = None
    # Weights that a pip package carries (RapidOCR's PP-OCR models): the package's import name;
    # its folder is the model path, and installing the engine's extra brings the weights.
    model_package: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # GGUF vision models: the projector files (mmproj) beside the weights in the repository,
    # the first one the default (Xinference's field); fleet.cluster.weights.projector.
    multimodal_projectors: list[str] | None = Field(default=None, max_length=64)

    @model_validator(mode="before")
    @classmethod
    def _accept_xinference_spec(cls, data: Any) -> Any:
        # A spec in Xinference's registration shape (one "quantization", a "model_hub").
        if isinstance(data, dict) and "model_src" not in data:
            return flat_spec(data)
        return data

    @field_validator("model_format")
    @classmethod
    def _canonical_format(cls, value: str) -> str:
        # The format, size and quantizations name the cache folder: plain names only.
        return safe_segment(canonical_format(value), "model_format")

    @field_validator("model_size_in_billions")
    @classmethod
    def _safe_size(cls, value: int | float | str | None) -> int | float | str | None:
        return check_size(value)

    @field_validator("quantizations")
    @classmethod
    def _safe_quantizations(cls, value: list[str]) -> list[str]:
        return check_quantizations(value)

    @field_validator("multimodal_projectors")
    @classmethod
    def _safe_projectors(cls, value: list[str] | None) -> list[str] | None:
        # Each is downloaded into, and read from, the weights' folder by its name.
        return [safe_relative_file(name, "multimodal_projectors entry") for name in value or []
                ] or None

    @model_validator(mode="after")
    def _safe_file_names(self) -> ModelSpec:
        check_file_templates(self.model_file_name_template, self.model_file_name_split_template,
                             self.quantizations, self.quantization_parts)
        return self

    @property
    def size_label(self) -> str:
        """Sizes are written `0_5` in Xinference's catalogue; show them as `0.5`."""
        if self.model_size_in_billions is None:
            return "-"
        return str(self.model_size_in_billions).replace("_", ".")

    def matches_size(self, size: int | float | str | None) -> bool:
        if size is None:
            return True
        if self.model_size_in_billions is None:
            return False
        try:
            return float(str(size).replace("_", ".")) == float(self.size_label)
        except ValueError:
            return str(size) == str(self.model_size_in_billions)


class BaseFamily(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: int = 2
    model_name: str = Field(min_length=1, max_length=200)
    model_description: str | None = None
    model_specs: list[ModelSpec] = Field(min_length=1)

    @field_validator("model_name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_model_name(value)

    @model_validator(mode="after")
    def _cache_folders_fit(self) -> BaseFamily:
        for spec in self.model_specs:
            for quantization in spec.quantizations:
                check_cache_folder_name(cache_folder_name(
                    self.model_name, spec.model_format, spec.size_label, quantization))
        return self

    @model_validator(mode="before")
    @classmethod
    def _accept_xinference_family(cls, data: Any) -> Any:
        # Xinference's version 1 custom embedding/rerank JSON puts model_id/model_uri at the
        # top level; version 2 files come in Xinference's spec shapes (xinference_format.py).
        if isinstance(data, dict) and "model_specs" not in data:
            flat = {k: data[k] for k in ("model_id", "model_uri", "model_revision") if k in data}
            if flat:
                data = dict(data)
                data["model_specs"] = [{"model_format": "pytorch", **flat}]
        return convert_family(data)

    @property
    def model_type(self) -> str:
        raise NotImplementedError

    @property
    def abilities(self) -> list[str]:
        raise NotImplementedError


class LLMFamily(BaseFamily):
    context_length: int = Field(default=2048, gt=0)
    model_lang: list[str] = Field(default_factory=lambda: ["en"])
    model_ability: list[str] = Field(default_factory=lambda: ["generate"])
    # For custom models: the built-in family whose chat formatting to borrow.
    model_family: str | None = None
    # None means: use the chat template that ships with the tokenizer.
    chat_template: str | None = None
    stop_token_ids: list[int] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)
    reasoning_start_tag: str | None = None
    reasoning_end_tag: str | None = None
    # Xinference's older chat format (fleet.catalogue.prompt_styles): a style, read into
    # chat_template and the stops above and then dropped, or the name of a built-in family whose
    # format to borrow (fleet.catalogue.registry.borrow_chat_format). Last, so that its checks
    # see the fields above.
    prompt_style: Annotated[
        Annotated[PromptStyle, Tag("style")] | Annotated[str, Tag("family name")],
        Discriminator(lambda value: "family name" if isinstance(value, str) else "style"),
    ] | None = None

    @field_validator("prompt_style")
    @classmethod
    def _style_fits(cls, value: PromptStyle | str | None,
                    info: ValidationInfo) -> PromptStyle | str | None:
        if value is not None:
            check_style_fits(value, info.data)
        return value

    @model_validator(mode="after")
    def _apply_prompt_style(self) -> LLMFamily:
        if isinstance(self.prompt_style, PromptStyle):
            chat = chat_format(self.prompt_style)
            self.chat_template = chat.chat_template
            self.stop = self.stop or chat.stop
            self.stop_token_ids = self.stop_token_ids or chat.stop_token_ids
            self.prompt_style = None
        return self

    @property
    def model_type(self) -> str:
        return "LLM"

    @property
    def abilities(self) -> list[str]:
        return self.model_ability


class EmbeddingFamily(BaseFamily):
    dimensions: int = Field(gt=0)
    max_tokens: int = Field(default=512, gt=0)
    language: list[str] = Field(default_factory=lambda: ["en"])
    # Matryoshka-trained models keep their meaning when cut to these sizes (and renormalized).
    matryoshka_dimensions: list[int] | None = None

    @property
    def model_type(self) -> str:
        return "embedding"

    @property
    def abilities(self) -> list[str]:
        return ["embed"]


class RerankFamily(BaseFamily):
    language: list[str] = Field(default_factory=lambda: ["en"])
    max_tokens: int = Field(default=512, gt=0)
    # "normal" is a cross-encoder; "LLM-based" scores with a causal LM's yes/no logits.
    type: str = "normal"

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        # Xinference's files say "unknown" (or null) and leave the guess to load time, from
        # the tokenizer's class, with "normal" as its fallback: Fleet takes that fallback now.
        # A causal-LM reranker must say "LLM-based".
        return "normal" if value in (None, "unknown") else value

    @property
    def model_type(self) -> str:
        return "rerank"

    @property
    def abilities(self) -> list[str]:
        return ["rerank"]


class ImageFamily(BaseFamily):
    """Xinference's image spec: diffusion pipelines (text2image, image2image, inpainting) and
    OCR models (ocr)."""

    # The pipeline family: "stable_diffusion", "flux", ... or "ocr".
    model_family: str = "stable_diffusion"
    model_ability: list[str] = Field(default_factory=lambda: ["text2image"])
    # Passed to the pipeline when it is built, and as defaults of each request.
    default_model_config: dict[str, Any] = Field(default_factory=dict)
    default_generate_config: dict[str, Any] = Field(default_factory=dict)

    @property
    def model_type(self) -> str:
        return "image"

    @property
    def abilities(self) -> list[str]:
        return self.model_ability


class AudioFamily(BaseFamily):
    """Xinference's audio spec: recognisers (audio2text) and voices (text2audio)."""

    # "whisper", "piper", "kokoro", ...
    model_family: str = "whisper"
    model_ability: list[str] = Field(default_factory=lambda: ["audio2text"])
    multilingual: bool = True
    default_model_config: dict[str, Any] = Field(default_factory=dict)
    default_transcription_config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _format_from_files(self) -> AudioFamily:
        # A registration names a folder, not its format (Xinference's custom audio JSON has
        # none): the files say whether it is a CTranslate2 conversion or a Piper voice.
        for spec in self.model_specs:
            found = local_audio_format(spec.model_uri) if spec.model_uri else None
            if found and spec.model_format != found:
                spec.model_format = found
        return self

    @property
    def model_type(self) -> str:
        return "audio"

    @property
    def abilities(self) -> list[str]:
        return self.model_ability


Family = LLMFamily | EmbeddingFamily | RerankFamily | ImageFamily | AudioFamily

FAMILY_CLASSES: dict[str, type[BaseFamily]] = {
    "LLM": LLMFamily,
    "embedding": EmbeddingFamily,
    "rerank": RerankFamily,
    "image": ImageFamily,
    "audio": AudioFamily,
}
