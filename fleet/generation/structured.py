"""What a request asks its output to look like, read from OpenAI's and Xinference's fields into one
`Constraint`, engine-free: `response_format` (json_object, json_schema), a forced `tool_choice`
("required" or a named function), tools left to the model (`tool_choice` "auto") on a family
without a tool format of its own, and the guided-decoding fields that vLLM defines and Xinference
passes on (`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`).

The checks here need no grammar library, so the API runs them before anything reaches a replica
(`check_request`); whether the grammar library can compile the schema is checked by the replica
before the request queues (fleet.generation.grammar)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from fleet.errors import BadRequest
from fleet.messages import GenerationCall

Kind = Literal["json_schema", "regex", "choice", "grammar", "tool_calls"]
GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar")
ANY_OBJECT: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class Constraint:
    """A grammar the output must follow. `spec` is canonical (a schema's compact JSON), so equal
    requests share one compiled grammar; `source` names the field, for error messages."""

    kind: Kind
    spec: str
    source: str


def canonical_json(value: Any) -> str:
    """Compact JSON, keys in the order given: a schema's property order is the order the
    answer's keys are written in, as on OpenAI's API, so it is part of the schema."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _schema_constraint(schema: Any, source: str) -> Constraint:
    if not isinstance(schema, dict):
        raise BadRequest(f"{source} must be a JSON schema object", code="invalid_schema")
    return Constraint("json_schema", canonical_json(schema), source)


def _response_format(value: dict[str, Any]) -> Constraint | None:
    kind = value.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return Constraint("json_schema", canonical_json(ANY_OBJECT), "response_format")
    if kind != "json_schema":
        raise BadRequest(f"response_format type {kind!r} must be 'text', 'json_object' or "
                         "'json_schema'", code="invalid_response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, dict) or "schema" not in spec:
        raise BadRequest("response_format {'type': 'json_schema'} needs json_schema: {'name': ..., "
                         "'schema': {...}}; the schema is missing", code="invalid_response_format")
    return _schema_constraint(spec["schema"], "response_format.json_schema.schema")


def _guided(call: GenerationCall) -> Constraint | None:
    present = [name for name in GUIDED_FIELDS if getattr(call, name) is not None]
    if not present:
        return None
    if len(present) > 1:
        raise BadRequest(f"only one guided-decoding field at a time; got {', '.join(present)}",
                         code="invalid_guided_decoding")
    name = present[0]
    value = getattr(call, name)
    if name == "guided_json":
        if isinstance(value, str):  # vLLM takes the schema as a JSON string too
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"guided_json is not valid JSON: {exc}", code="invalid_schema") from None
        return _schema_constraint(value, name)
    if name == "guided_choice":
        if (not isinstance(value, list) or not value
                or not all(isinstance(c, str) and c for c in value)):
            raise BadRequest("guided_choice must be a list of non-empty strings",
                             code="invalid_guided_decoding")
        return Constraint("choice", canonical_json(sorted(set(value))), name)
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} must be a non-empty string", code="invalid_guided_decoding")
    return Constraint("regex" if name == "guided_regex" else "grammar", value, name)


def _tool_named(call: GenerationCall, choice: dict[str, Any]) -> str:
    """The function a dict tool_choice names, checked against `tools`."""
    function = choice.get("function") if choice.get("type") == "function" else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise BadRequest("tool_choice must be 'none', 'auto', 'required' or "
                         "{'type': 'function', 'function': {'name': ...}}", code="invalid_tool_choice")
    names = [t["function"]["name"] for t in call.tools or []]
    if name not in names:
        raise BadRequest(f"tool_choice names the function {name!r}, which is not in tools "
                         f"({', '.join(names) or 'no tools given'})", code="invalid_tool_choice")
    return name


def forced_tools(call: GenerationCall) -> list[dict[str, Any]] | None:
    """The functions one of which the answer must call, when tool_choice forces a call."""
    choice = call.tool_choice
    if choice != "required" and not isinstance(choice, dict):
        return None
    if not call.tools:
        raise BadRequest("tool_choice forces a tool call, but the request has no tools",
                         code="invalid_tool_choice")
    functions = [t["function"] for t in call.tools]
    if isinstance(choice, dict):
        name = _tool_named(call, choice)
        functions = [f for f in functions if f["name"] == name]
    return functions


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one call, {"name": ..., "arguments": {...}}: the shape fleet.generation.tool_calls
    reads back as a call (a Llama-style answer), so forced and free calls come out alike.

    The arguments are the parameters the schema lists, and no others, unless it says otherwise
    (`additionalProperties`): a function takes its parameters, and a small model left free to
    add keys copies the schema's own (`"type": "integer"`) into its call."""
    parameters = function.get("parameters")
    if parameters is None:
        parameters = ANY_OBJECT
    if not isinstance(parameters, dict):
        raise BadRequest(f"the parameters of function {function['name']!r} must be a JSON schema "
                         "object", code="invalid_schema")
    if "properties" in parameters and "additionalProperties" not in parameters:
        parameters = {**parameters, "additionalProperties": False}
    return {"type": "object", "properties": {"name": {"const": function["name"]},
                                             "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def _forced_constraint(functions: list[dict[str, Any]]) -> Constraint:
    schemas = [_call_schema(f) for f in functions]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return Constraint("json_schema", canonical_json(schema), "tool_choice")


def _generic_constraint(functions: list[dict[str, Any]], text: bool, parallel: bool) -> Constraint:
    """Calls in the generic format (fleet.generation.tool_use): `<tool_call>` blocks around the
    call's JSON, alone (a forced call) or as the alternative to plain text ("auto"). Several calls
    in one answer only when the client asked for them: a model not trained for calls, left free
    to go on, tends to call again until max_tokens."""
    spec = {"calls": [_call_schema(f) for f in functions], "text": text, "parallel": parallel}
    return Constraint("tool_calls", canonical_json(spec), "tool_choice")


def _tool_constraint(call: GenerationCall, generic_tools: bool) -> Constraint | None:
    functions = forced_tools(call)
    if functions is not None:
        return _generic_constraint(functions, False, False) if generic_tools else (
            _forced_constraint(functions))
    return None


def constraint_of(call: GenerationCall, generic_tools: bool = False) -> Constraint | None:
    """The grammar a chat or completion body asks for, if any; at most one source may ask.

    `generic_tools`: the model's family has no tool format of its own, so its calls are made in
    the generic one, forced or not; tools left to the model ("auto") then constrain the answer to
    text or calls, unless another field constrains it, which wins (as on a family with a format
    of its own, whose calls such a grammar leaves no room for)."""
    found: list[Constraint] = []
    tool_constraint = _tool_constraint(call, generic_tools)
    if tool_constraint is not None:
        found.append(tool_constraint)
    if isinstance(call.response_format, dict):
        from_format = _response_format(call.response_format)
        if from_format is not None:
            found.append(from_format)
    guided = _guided(call)
    if guided is not None:
        found.append(guided)
    if len(found) > 1:
        raise BadRequest(f"{' and '.join(c.source.split('.')[0] for c in found)} both constrain the "
                         "answer; send one of them", code="conflicting_constraints")
    if not found and generic_tools and call.tools and tools_offered(call):
        functions = [t["function"] for t in call.tools]
        return _generic_constraint(functions, True, call.parallel_tool_calls is True)
    return found[0] if found else None


def tools_offered(call: GenerationCall) -> bool:
    """Whether the answer may call one of the request's tools."""
    return bool(call.tools) and call.tool_choice != "none"


def check_request(call: GenerationCall) -> None:
    """The API's checks, before the request leaves for a replica."""
    constraint_of(call)
