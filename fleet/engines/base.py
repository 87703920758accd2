"""The engine boundary: what each engine declares, and the protocol per ability."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from fleet.catalogue.schemas import BaseFamily, ModelSpec


@dataclass(frozen=True)
class EngineInfo:
    """What an engine can run, declared without importing the engine's library."""

    name: str
    model_types: tuple[str, ...]
    formats: tuple[str, ...]
    abilities: tuple[str, ...]
    # Python modules that must be importable for the engine to work.
    requires: tuple[str, ...]
    # "module:Class" of the implementation, imported in the model process only.
    implementation: str
    # Lower is preferred when several engines match.
    priority: int = 100
    quantizations: tuple[str, ...] = ("none",)
    pip_extra: str = ""
    extra_notes: dict[str, str] = field(default_factory=dict)

    def missing_modules(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def why_not(self, family: BaseFamily, spec: ModelSpec | None = None) -> str | None:
        """None when this engine can run the family (and spec); otherwise the reason."""
        if family.model_type not in self.model_types:
            return f"runs {'/'.join(self.model_types)} models, not {family.model_type}"
        if not set(family.abilities) & set(self.abilities):
            return f"supports {', '.join(self.abilities)}, the model needs {', '.join(family.abilities)}"
        specs = [spec] if spec else family.model_specs
        if not any(s.model_format in self.formats for s in specs):
            formats = ", ".join(sorted({s.model_format for s in specs}))
            return f"runs {', '.join(self.formats)} weights, the model has {formats}"
        missing = self.missing_modules()
        if missing:
            needed = ", ".join(missing)
            return f"not installed (missing {needed}): pip install 'fleet-serve[{self.pip_extra}]'"
        return None

    def load_class(self) -> type:
        module_name, class_name = self.implementation.split(":")
        return getattr(importlib.import_module(module_name), class_name)


@dataclass
class EmbeddingResult:
    vectors: np.ndarray  # float32, shape (n_inputs, dimensions)
    prompt_tokens: int


class EmbeddingEngine(Protocol):
    """An engine that turns texts into vectors."""

    def __init__(self, model_path: str, family: BaseFamily, device: str, **kwargs: Any): ...

    def load(self) -> None: ...

    def embed(self, texts: list[str]) -> EmbeddingResult: ...

    def close(self) -> None: ...
