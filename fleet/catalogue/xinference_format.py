"""Xinference's names and model-family files, read as Fleet's.

Xinference 4.1.0 calls GGUF weights `ggufv2`, and writes a family's variants in two shapes:
- its catalogue: one spec per format and size, with `model_src` holding one entry per hub
  (`huggingface`, `modelscope`...), each with its own `model_id`, `quantizations` and file
  name templates;
- its custom registrations: one flat spec per hub and quantization (`model_hub`, a single
  `quantization`, which older files write as a list); its older (version 1) files: one spec
  per variant with its `quantizations` list and one `model_hub`.
Fleet keeps one spec per variant with its `quantizations` and both hub ids (`model_id` for
Hugging Face, `modelscope_model_id`). The functions here turn either Xinference shape into that
one, on plain dicts before validation; a spec already in Fleet's shape passes through unchanged,
so a family read, dumped and read again stays the same."""

from __future__ import annotations

from typing import Any

from fleet.catalogue.safe_names import check_quantizations

# Xinference's format names that mean one of Fleet's. GGUF is the only one that differs:
# Xinference kept `ggufv2` after dropping GGML (`ggmlv3`), Fleet says `gguf`.
FORMAT_ALIASES = {"ggufv2": "gguf"}
_XINFERENCE_NAMES = {fleet: xinference for xinference, fleet in FORMAT_ALIASES.items()}

MAIN_HUB = "huggingface"
# Per-hub fields that may differ between hubs (a ModelScope mirror's files can be named
# differently); a second hub's value is kept under `modelscope_<field>` when it differs.
_HUB_FIELDS = ("model_revision", "model_file_name_template", "model_file_name_split_template",
               "quantization_parts")
_PLACEHOLDER = "{quantization}"


def canonical_format(value: str) -> str:
    """The one spelling Fleet compares: lower case, Xinference's aliases resolved."""
    lowered = value.strip().lower()
    return FORMAT_ALIASES.get(lowered, lowered)


def xinference_format_name(value: str) -> str:
    """The name Xinference's clients look for (`ggufv2` for `gguf`), for answers in its shape."""
    return _XINFERENCE_NAMES.get(value, value)


def _hub_prefix(hub: str) -> str:
    return "" if hub == MAIN_HUB else f"{hub}_"


def _listed_quantization(value: Any, listed: Any) -> list[str]:
    """A spec's `quantization` as Fleet's list: one name, or a list of them (older files write
    one-entry lists). Errors name `quantization`, the field the file wrote."""
    if isinstance(value, str):
        names = [value or "none"]
    elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        names = value
    else:
        raise ValueError("quantization must be a name such as 'Q4_K_M' or a non-empty list of "
                         f"names, not {_shown(value)}")
    check_quantizations(names)
    if listed is not None and listed != names:
        raise ValueError(f"quantization {_shown(value)} and quantizations {_shown(listed)} "
                         "disagree; give one of them")
    return names


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def flat_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """One registration spec (`model_hub`, one `quantization`) as Fleet's spec; a ValueError
    says what in it cannot be read."""
    data = {k: v for k, v in spec.items() if v is not None}
    hub = data.pop("model_hub", None) or MAIN_HUB
    if "quantization" in data:
        data["quantizations"] = _listed_quantization(data.pop("quantization"),
                                                     data.get("quantizations"))
    if hub != MAIN_HUB:
        # Fleet's model_id is a Hugging Face id; another hub's id keeps its hub in its name.
        for key in ("model_id", "model_revision"):
            if data.get(key) is not None:
                data[f"{_hub_prefix(hub)}{key}"] = data.pop(key)
    return _fill_single_quantization(data)


def _fill_single_quantization(data: dict[str, Any]) -> dict[str, Any]:
    """A hub id written with `{quantization}` names one repository per quantization; with one
    quantization it is that repository."""
    quantizations = data.get("quantizations") or []
    if len(quantizations) == 1:
        for key, value in data.items():
            if key.endswith("model_id") and isinstance(value, str) and _PLACEHOLDER in value:
                data[key] = value.replace(_PLACEHOLDER, quantizations[0])
    return data


def _from_model_src(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """A catalogue spec with `model_src` as Fleet's spec(s): Hugging Face's entry gives the
    quantizations and file names (the first hub when it is absent), every hub keeps its id."""
    sources: dict[str, dict[str, Any]] = spec["model_src"] or {}
    if not sources:
        raise ValueError("model_src names no hub")
    data = {k: v for k, v in spec.items() if k != "model_src"}
    main_hub = MAIN_HUB if MAIN_HUB in sources else next(iter(sources))
    main = sources[main_hub]
    data.update({k: v for k, v in main.items() if k not in ("model_id", "model_revision")})
    for hub, source in sources.items():
        prefix = _hub_prefix(hub)
        data[f"{prefix}model_id"] = source.get("model_id")
        if source.get("model_revision") is not None:
            data[f"{prefix}model_revision"] = source["model_revision"]
        if hub != main_hub:
            for key in _HUB_FIELDS[1:]:
                if source.get(key) is not None and source[key] != main.get(key):
                    data[f"{prefix}{key}"] = source[key]
    data = {k: v for k, v in data.items() if v is not None}
    data.setdefault("quantizations", ["none"])
    return _split_by_templated_id(data)


def _split_by_templated_id(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Xinference formats `{quantization}` into a hub id per quantization (GPTQ repositories);
    Fleet downloads a spec's id as it is, so such a spec becomes one spec per quantization."""
    templated = any(isinstance(v, str) and _PLACEHOLDER in v
                    for k, v in data.items() if k.endswith("model_id"))
    if not templated or len(data["quantizations"]) <= 1:
        return [_fill_single_quantization(data)]
    return [_fill_single_quantization({**data, "quantizations": [q]})
            for q in data["quantizations"]]


def _merge_key(spec: dict[str, Any], skip: tuple[str, ...]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in spec.items() if k not in skip))


def _merge_quantizations(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat specs that differ only in their quantization become one spec listing them all."""
    merged: dict[tuple, dict[str, Any]] = {}
    for spec in specs:
        key = _merge_key(spec, ("quantizations",))
        if key in merged:
            known = merged[key]["quantizations"]
            known.extend(q for q in spec["quantizations"] if q not in known)
        else:
            merged[key] = {**spec, "quantizations": list(spec["quantizations"])}
    return list(merged.values())


def _merge_hubs(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A ModelScope spec for the same variant as a Hugging Face one adds its id to it (the two
    were one catalogue spec before Xinference flattened them per hub)."""
    hub_only = ("modelscope_model_id", "modelscope_model_revision")
    result: list[dict[str, Any]] = []
    for spec in specs:
        mirror = spec.get("model_id") is None and spec.get("modelscope_model_id") is not None
        twin = next((s for s in result if mirror and s.get("model_id") is not None
                     and "modelscope_model_id" not in s
                     and _merge_key(s, ("model_id", "model_revision", *hub_only))
                     == _merge_key(spec, hub_only)), None)
        if twin is None:
            result.append(spec)
        else:
            twin.update({k: spec[k] for k in hub_only if k in spec})
    # Hugging Face first: a launch that names no hub takes the first matching spec.
    return sorted(result, key=lambda s: s.get("model_id") is None)


def convert_specs(specs: list[Any]) -> list[Any]:
    """Fleet's specs from Xinference's (either shape) or Fleet's own (unchanged)."""
    converted: list[Any] = []
    flat = False
    for spec in specs:
        if not isinstance(spec, dict):
            converted.append(spec)  # left to the schema to refuse with its own message
        elif "model_src" in spec:
            converted.extend(_from_model_src(spec))
        else:
            flat = flat or "model_hub" in spec or "quantization" in spec
            try:
                converted.append(flat_spec(spec))
            except ValueError:
                # Left as written: the spec's own schema (ModelSpec) refuses it, at its place
                # in the list.
                converted.append(spec)
    if flat and all(isinstance(s, dict) and isinstance(s.get("quantizations"), list)
                    for s in converted):
        converted = _merge_hubs(_merge_quantizations(converted))
    return converted


def convert_family(data: Any) -> Any:
    """A family dict in Xinference's shape as Fleet's; anything else unchanged."""
    if not isinstance(data, dict):
        return data
    # Xinference writes null for what it leaves to its defaults (context_length, max_tokens):
    # Fleet's defaults then apply.
    data = {k: v for k, v in data.items() if v is not None}
    # Provenance is Fleet's to say (built-in or registered), never the file's.
    data.pop("is_builtin", None)
    for key in ("stop", "stop_token_ids"):
        # Xinference's form starts these lists with one empty entry: an empty stop is none.
        if isinstance(data.get(key), list):
            data[key] = [v for v in data[key] if v not in ("", None)]
    if isinstance(data.get("model_specs"), list):
        data["model_specs"] = convert_specs(data["model_specs"])
    return data
