"""The parts of a model family that become parts of a path, checked when the family is read (a
registration, the built-in catalogue, a persisted file): its name names its registration file
and, with the format, the size and the quantization, its cache folders (`cache_folder_name`),
and the file-name templates name the files inside them. A size of `../../../../tmp/x` would
otherwise make a download write outside FLEET_HOME, and a name of 200 `é` (400 bytes) would
fail every write, since Linux takes at most 255 bytes in one file name.

Errors are ValueErrors: these run as pydantic validators, whose refusals the API answers 400."""

from __future__ import annotations

import math
import string
from typing import Any

from fleet.paths import safe_relative_file, safe_segment

_MAX_SIZE_CHARS = 16
_TEMPLATE_FIELDS = {"file": {"quantization"}, "split": {"quantization", "part"}}
# One file name: NAME_MAX bytes on Linux (other systems count 255 characters or UTF-16 units,
# which 255 bytes of UTF-8 never exceed).
MAX_FILE_NAME_BYTES = 255
# A family's name: the registration is written as `.NAME.json.XXXXXXXX.tmp` (19 bytes more)
# and renamed to `NAME.json`; 200 bytes leaves room, and holds 200 ASCII characters.
MAX_MODEL_NAME_BYTES = 200


def check_model_name(value: str) -> str:
    """A family's name: it becomes a file name and a URL segment, so no separators, no leading
    dot, no surrounding spaces or control characters, and at most MAX_MODEL_NAME_BYTES in
    UTF-8 (the pydantic field caps the characters; non-ASCII ones take 2 to 4 bytes)."""
    if ("/" in value or "\\" in value or value.startswith(".") or value != value.strip()
            or not value.isprintable()):
        raise ValueError("model_name must not contain slashes or control characters, start "
                         "with a dot or carry spaces")
    size = len(value.encode("utf-8"))  # printable: no lone surrogates
    if size > MAX_MODEL_NAME_BYTES:
        raise ValueError(f"model_name is {size} bytes in UTF-8, more than "
                         f"{MAX_MODEL_NAME_BYTES}: it names the registration's file")
    return value


def cache_folder_name(model_name: str, model_format: str, size_label: str,
                      quantization: str) -> str:
    """The name of the cache folder of one variant: `NAME-FORMAT-SIZE`, and `-QUANTIZATION` for
    GGUF (whose repositories hold one file per quantization)."""
    parts = [model_name, model_format, size_label]
    if model_format == "gguf":
        parts.append(quantization)
    return "-".join(p for p in parts if p and p != "-")


def check_cache_folder_name(name: str) -> None:
    size = len(name.encode("utf-8"))
    if size > MAX_FILE_NAME_BYTES:
        raise ValueError(f"the cache folder of this variant, {name!r}, would be {size} bytes "
                         f"long, more than a file name may be ({MAX_FILE_NAME_BYTES}); "
                         "shorten model_name or the quantization")


def check_size(value: Any) -> Any:
    """`7`, `0.5`, `"0_5"`, `"1_8"`: a non-negative finite number, or a short safe name."""
    if value is None:
        return value
    if isinstance(value, bool):
        raise ValueError("model_size_in_billions must be a number such as 7, 1.5 or '0_5'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"model_size_in_billions {value!r} must be a non-negative number")
        return value
    if len(value) > _MAX_SIZE_CHARS:
        raise ValueError(f"model_size_in_billions {value!r} is longer than {_MAX_SIZE_CHARS} "
                         "characters")
    return safe_segment(value, "model_size_in_billions")


def check_quantizations(values: list[str]) -> list[str]:
    return [safe_segment(value, "quantization") for value in values]


def _template_fields(template: str, kind: str, what: str) -> None:
    """Only `{quantization}` (and `{part}` in a split template), without attribute access,
    conversion or format spec: `{quantization.__class__}` would read Python objects, and
    `{quantization:>999999999}` would build a huge string."""
    allowed = _TEMPLATE_FIELDS[kind]
    try:
        fields = [(name, spec, conversion)
                  for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as exc:
        raise ValueError(f"{what} {template!r} is not a valid template: {exc}") from None
    for name, spec, conversion in fields:
        if name not in allowed or spec or conversion:
            names = " and ".join("{" + f + "}" for f in sorted(allowed))
            raise ValueError(f"{what} {template!r} may only contain {names}")


def check_file_templates(template: str | None, split_template: str | None,
                         quantizations: list[str],
                         parts: dict[str, list[str]] | None) -> None:
    """Every file name the templates give, for each quantization (and part), is a plain
    relative path; the part names themselves too."""
    for key, names in (parts or {}).items():
        safe_segment(key, "quantization_parts key")
        for name in names:
            safe_segment(name, "quantization part")
    if template:
        _template_fields(template, "file", "model_file_name_template")
        for quantization in quantizations or ["none"]:
            safe_relative_file(template.format(quantization=quantization),
                               "model_file_name_template gives")
    if split_template:
        _template_fields(split_template, "split", "model_file_name_split_template")
        for quantization, names in (parts or {}).items():
            for name in names:
                safe_relative_file(split_template.format(quantization=quantization, part=name),
                                   "model_file_name_split_template gives")
