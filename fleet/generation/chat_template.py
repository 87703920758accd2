"""OpenAI chat messages -> the prompt text a model was trained on, through its Jinja chat
template (the catalogue family's, or the model's own: its tokenizer's, or its GGUF file's).

Every engine renders through `render_chat`, so a family formats its chats the same way whichever
engine runs it. The template runs the way Hugging Face's `apply_chat_template` runs it (the way the
templates on the Hub are written for): a sandboxed Jinja environment with trim_blocks and
lstrip_blocks, loop controls, `raise_exception`, a `tojson` that keeps non-ASCII text,
`strftime_now`, the `{% generation %}` tag, and the model's special tokens (bos_token, eos_token...)
as variables. Templates are untrusted code from model repositories, hence the sandbox."""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from fleet.errors import BadRequest

# A message's reasoning goes by several names; templates read one of them (Qwen3 reads
# reasoning_content, gpt-oss reads thinking), so every name is filled, as Transformers does.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

ROLES = ("system", "developer", "user", "assistant", "tool")


IMAGE_PART = {"type": "image"}


def _content_of(content: Any, where: str, user: bool) -> str | list[dict[str, Any]] | None:
    """Message content as templates read it: text (a string, or OpenAI's text parts joined), or,
    where a user's message holds images, its parts: text parts and `{"type": "image"}`, the
    place of the chat's next image (the API put them there, fleet.api.chat_images)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for index, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                parts.append({"type": "text", "text": str(part.get("text", ""))})
            elif kind == "image" and user:
                parts.append(IMAGE_PART)
            elif kind == "image":
                raise BadRequest(f"{where}.content[{index}]: images are read in user messages "
                                 "only", code="unsupported_content")
            else:
                raise BadRequest(f"{where}.content[{index}]: content parts of type {kind!r} are "
                                 "not supported by this model", code="unsupported_content")
        if IMAGE_PART in parts:
            return parts
        return "".join(part["text"] for part in parts)
    raise BadRequest(f"{where}: content must be a string or a list of parts")


def image_count(messages: list[dict[str, Any]]) -> int:
    """The image parts in the messages (each stands for one of the call's images)."""
    return sum(1 for message in messages if isinstance(message.get("content"), list)
               for part in message["content"] if isinstance(part, dict) and part.get("type") == "image")


def with_image_markers(messages: list[dict[str, Any]], marker: str) -> list[dict[str, Any]]:
    """The messages with `marker` written in place of each image part, for an engine that finds
    its images' places in the prompt's text (fleet.engines.base.BaseLLMEngine.image_marker)."""
    def text(part: Any) -> Any:
        if isinstance(part, dict) and part.get("type") == "image":
            return {"type": "text", "text": marker}
        return part

    return [{**message, "content": [text(part) for part in message["content"]]}
            if isinstance(message.get("content"), list) else message for message in messages]


def _tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """A message's tool_calls as templates read them; anything but OpenAI's list of
    {"id", "type", "function": {"name", "arguments"}} objects is the client's error."""
    if not isinstance(calls, list):
        raise BadRequest(f"{where}.tool_calls must be a list of tool calls",
                         code="invalid_tool_calls")
    for index, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("function") or {}, dict):
            raise BadRequest(f"{where}.tool_calls[{index}] must be an object with a 'function' "
                             "object ({'name': ..., 'arguments': ...})", code="invalid_tool_calls")
    return [_tool_call_for_template(call) for call in calls]


def _tool_call_for_template(call: dict[str, Any]) -> dict[str, Any]:
    """Templates write arguments with `tojson`: hand them a dict, not OpenAI's JSON string."""
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass  # keep the model's own text; the template will write it as a string
    return {**call, "type": call.get("type", "function"), "function": function}


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not messages:
        raise BadRequest("messages must hold at least one message", code="empty_messages")
    normalized = []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        if role not in ROLES:
            raise BadRequest(f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}",
                             code="invalid_role")
        item = {k: v for k, v in message.items() if v is not None}
        # Most templates know "system" only; OpenAI's newer "developer" means the same.
        item["role"] = "system" if role == "developer" else role
        item["content"] = _content_of(message.get("content"), where, role == "user") or ""
        if message.get("tool_calls"):
            item["tool_calls"] = _tool_calls(message["tool_calls"], where)
        normalized.append(item)
    return normalized


def _alias_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def pick_template(template: str | dict[str, str] | None, tools: list[dict[str, Any]] | None) -> str | None:
    """A model may carry several named templates: "tool_use" serves requests with tools."""
    if not isinstance(template, dict):
        return template
    if tools and "tool_use" in template:
        return template["tool_use"]
    return template.get("default") or next(iter(template.values()), None)


@lru_cache(maxsize=32)
def _compile(source: str) -> Any:
    return _environment().from_string(source)


@lru_cache(maxsize=1)
def _environment() -> Any:
    """One sandboxed Jinja environment with Hugging Face's template helpers, built once."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}` marks the assistant's text for training
        masks; rendering a prompt keeps the text as is."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_keep"), [], [], body).set_lineno(lineno)

        def _keep(self, caller: Any) -> str:
            return caller()

    class Namespace(jinja2.utils.Namespace):
        # No underscore names on namespaces: they lead to Python internals out of the sandbox.
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
               separators: Any = None, sort_keys: bool = False) -> str:
        # Jinja's own tojson escapes HTML characters, which no model was trained on.
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, namespace=Namespace,
                       strftime_now=lambda fmt: datetime.now().strftime(fmt))
    return env


def render_chat(template: str | dict[str, str] | None, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None,
                template_kwargs: dict[str, Any] | None = None,
                special_tokens: dict[str, str] | None = None) -> str:
    """The prompt text, generation prompt included; template errors become 400s.

    `template` is the family's or the model's own; `special_tokens` the model's token strings
    (bos_token, eos_token...) that templates write; `template_kwargs` the request's
    `chat_template_kwargs` (enable_thinking...), which may override them."""
    source = pick_template(template, tools)
    if not source:
        raise BadRequest("this model has no chat template; use /v1/completions with a prompt",
                         code="no_chat_template")
    chat = [_alias_reasoning(m) for m in normalize_messages(messages)]
    variables = {**(special_tokens or {}), **(template_kwargs or {})}
    try:
        return _compile(source).render(messages=chat, tools=tools or None, documents=None,
                                       add_generation_prompt=True, **variables)
    except Exception as exc:  # jinja2 raises TemplateError subclasses, templates raise_exception
        raise BadRequest(f"the model's chat template refused these messages: {exc}",
                         code="chat_template_error") from None
