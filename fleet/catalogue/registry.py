"""The catalogue: built-in families (JSON inside the package) plus custom registrations, kept by
a store (the cluster's database: fleet.database.registrations) and held in memory here, so that
finding a family never reads the store."""

from __future__ import annotations

import json
import logging
from functools import cache
from importlib import resources
from typing import Any, Protocol

from pydantic import ValidationError

from fleet.catalogue.schemas import (
    FAMILY_CLASSES,
    MODEL_TYPES,
    BaseFamily,
    LLMFamily,
    ModelSpec,
    RerankFamily,
    normalize_model_type,
)
from fleet.catalogue.xinference_format import canonical_format
from fleet.errors import BadRequest, NotFound

logger = logging.getLogger(__name__)

_DATA_FILES = {"LLM": "llm.json", "embedding": "embedding.json", "rerank": "rerank.json",
               "image": "image.json", "audio": "audio.json"}


@cache
def builtin_families(model_type: str) -> dict[str, BaseFamily]:
    """Parsed once per process: the files are part of the installed package."""
    cls = FAMILY_CLASSES[model_type]
    data = resources.files("fleet.catalogue") / "data" / _DATA_FILES[model_type]
    text = data.read_text(encoding="utf-8")
    families = [cls.model_validate(item) for item in json.loads(text)]
    return {family.model_name: family for family in families}


def format_validation_error(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


def parse_family(model_type: str, data: dict[str, Any]) -> BaseFamily:
    try:
        return FAMILY_CLASSES[model_type].model_validate(data)
    except ValidationError as exc:
        raise BadRequest(f"invalid {model_type} model: {format_validation_error(exc)}") from None


def _is_jinja(text: str) -> bool:
    return "{{" in text or "{%" in text


def borrow_chat_format(family: LLMFamily) -> LLMFamily:
    """A custom LLM's chat formatting taken from a built-in family, the way Xinference reads a
    registration: a `chat_template` that is a built-in family's name (not a Jinja template)
    means that family's template; no template on a chat model means its `model_family`'s.
    Stop strings, stop ids and reasoning tags the file leaves empty come from that family too.
    A built-in family whose template is null (the tokenizer's own) lends null, which means the
    same for the custom model. Xinference's `prompt_style` given as a string names such a family
    too (its style object was read when the family was; fleet.catalogue.prompt_styles)."""
    named = family.chat_template if family.chat_template and not _is_jinja(
        family.chat_template) else None
    field = "chat_template"
    if isinstance(family.prompt_style, str):
        named, field = family.prompt_style, "prompt_style"
    source_name = named
    if not named and family.chat_template is None and "chat" in family.model_ability:
        source_name = family.model_family
    if not source_name:
        return family
    source = builtin_families("LLM").get(source_name)
    if not isinstance(source, LLMFamily):
        if field == "prompt_style":
            raise BadRequest(f"prompt_style {named!r} is not the name of a built-in LLM family; "
                             "give the style itself (an object with style_name and roles) or "
                             "a Jinja chat_template")
        if named:
            raise BadRequest(f"chat_template {named!r} is neither a Jinja template nor the name "
                             "of a built-in LLM family")
        # Xinference's own family names are not all in Fleet's catalogue: the weights' own
        # chat template (tokenizer or GGUF) is then used, as for any model without one.
        logger.info("model_family %r of %s is not a built-in family here; its weights' own chat "
                    "template will be used", source_name, family.model_name)
        return family
    updates: dict[str, Any] = {"chat_template": source.chat_template, "prompt_style": None}
    for key in ("stop", "stop_token_ids", "reasoning_start_tag", "reasoning_end_tag"):
        if not getattr(family, key):
            updates[key] = getattr(source, key)
    return family.model_copy(update=updates)


class RegistrationStore(Protocol):
    """Where custom registrations persist: each family as the JSON that `register` saved."""

    def load(self) -> list[tuple[str, str, Any]]:
        """(model type, model name, saved family) of every registration."""
        ...

    def save(self, model_type: str, model_name: str, family: dict[str, Any]) -> None:
        """Raises (fleet.errors.StateNotSaved) when it could not: nothing is then registered."""
        ...

    def delete(self, model_type: str, model_name: str) -> None: ...


class UnsavedRegistrations:
    """A store that keeps nothing: a catalogue for lookups and tests, not for a cluster."""

    def load(self) -> list[tuple[str, str, Any]]:
        return []

    def save(self, model_type: str, model_name: str, family: dict[str, Any]) -> None:
        pass

    def delete(self, model_type: str, model_name: str) -> None:
        pass


class Catalogue:
    """Built-in plus custom families; custom ones are saved before they are shown, and read
    back from the store at start."""

    def __init__(self, store: RegistrationStore | None = None):
        self._store: RegistrationStore = store or UnsavedRegistrations()
        self._custom: dict[str, dict[str, BaseFamily]] = {t: {} for t in MODEL_TYPES}
        self._load_custom()

    def _load_custom(self) -> None:
        for model_type, model_name, data in self._store.load():
            where = f"{model_type}/{model_name}"
            if model_type not in MODEL_TYPES:
                logger.error("skipping registration %s: unknown model type", where)
                continue
            try:
                family = parse_family(model_type, data)
            except (BadRequest, ValueError) as exc:
                logger.error("skipping unreadable registration %s: %s", where, exc)
                continue
            self._custom[model_type][family.model_name] = family

    def families(self, model_type: str) -> dict[str, BaseFamily]:
        model_type = normalize_model_type(model_type)
        return {**builtin_families(model_type), **self._custom[model_type]}

    def is_builtin(self, model_type: str, model_name: str) -> bool:
        return model_name in builtin_families(normalize_model_type(model_type))

    def find(self, model_name: str, model_type: str | None = None) -> BaseFamily:
        types = [normalize_model_type(model_type)] if model_type else list(MODEL_TYPES)
        for candidate in types:
            family = self.families(candidate).get(model_name)
            if family is not None:
                return family
        where = f" of type {types[0]}" if model_type else ""
        raise BadRequest(
            f"model {model_name!r}{where} is not in the catalogue; "
            "see `fleet registrations -t TYPE` or register it first",
            code="model_not_found",
        )

    def find_for_launch(self, model_name: str, model_type: str | None) -> BaseFamily:
        """Like `find`, and a chat LM asked for as a rerank model becomes an LLM-based reranker
        (scored by its yes/no logits), so any causal LM in the catalogue can rerank."""
        if model_type and normalize_model_type(model_type) == "rerank":
            llm = self.families("LLM").get(model_name)
            if llm is not None and model_name not in self.families("rerank"):
                return RerankFamily(
                    model_name=llm.model_name,
                    model_description=f"{llm.model_name} used as an LLM-based reranker",
                    model_specs=[s for s in llm.model_specs if s.model_format == "pytorch"]
                    or llm.model_specs,
                    type="LLM-based",
                    max_tokens=min(getattr(llm, "context_length", 8192), 8192),
                )
        return self.find(model_name, model_type)

    def register(self, model_type: str, data: dict[str, Any], persist: bool = True) -> BaseFamily:
        model_type = normalize_model_type(model_type)
        family = parse_family(model_type, data)
        if isinstance(family, LLMFamily):
            family = borrow_chat_format(family)
        if family.model_name in builtin_families(model_type):
            raise BadRequest(f"{family.model_name!r} is a built-in model; choose another name")
        if family.model_name in self._custom[model_type]:
            raise BadRequest(f"a custom model named {family.model_name!r} is already registered")
        if persist:
            self._store.save(model_type, family.model_name,
                             family.model_dump(mode="json", exclude_none=True))
        self._custom[model_type][family.model_name] = family
        return family

    def unregister(self, model_type: str, model_name: str) -> None:
        model_type = normalize_model_type(model_type)
        if model_name in builtin_families(model_type):
            raise BadRequest(f"{model_name!r} is a built-in model and cannot be unregistered")
        if model_name not in self._custom[model_type]:
            raise NotFound(f"no custom {model_type} model named {model_name!r}")
        self._store.delete(model_type, model_name)  # gone from the store first: never back
        del self._custom[model_type][model_name]

    def list_registrations(self, model_type: str, detailed: bool = False) -> list[dict[str, Any]]:
        model_type = normalize_model_type(model_type)
        rows = []
        for name, family in sorted(self.families(model_type).items()):
            row: dict[str, Any] = {"model_name": name, "is_builtin": self.is_builtin(model_type, name)}
            if detailed:
                row.update(family.model_dump(mode="json", exclude_none=True))
            rows.append(row)
        return rows

    def describe_registration(self, model_type: str, model_name: str) -> dict[str, Any]:
        family = self.families(model_type).get(model_name)
        if family is None:
            raise NotFound(f"no {normalize_model_type(model_type)} model named {model_name!r}")
        data = family.model_dump(mode="json", exclude_none=True)
        data["is_builtin"] = self.is_builtin(model_type, model_name)
        return data


def select_spec(
    family: BaseFamily,
    model_format: str | None = None,
    size: int | float | str | None = None,
    quantization: str | None = None,
) -> tuple[ModelSpec, str]:
    """The first spec that matches what the user asked for, and the quantization to use."""
    wanted_format = canonical_format(model_format) if model_format else None
    for spec in family.model_specs:
        if wanted_format and spec.model_format != wanted_format:
            continue
        if not spec.matches_size(size):
            continue
        if quantization and quantization not in spec.quantizations:
            continue
        return spec, quantization or spec.quantizations[0]
    wanted = ", ".join(
        f"{k}={v}"
        for k, v in (("format", model_format), ("size", size), ("quantization", quantization))
        if v
    )
    available = "; ".join(
        f"{s.model_format} {s.size_label}B [{', '.join(s.quantizations)}]" for s in family.model_specs
    )
    raise BadRequest(
        f"{family.model_name} has no variant with {wanted}; available: {available}",
        code="spec_not_found",
    )
