"""OpenAI chat messages -> the prompt text a model was trained on, through its Jinja chat
template (the catalogue family's, or the tokenizer's own)."""

from __future__ import annotations

import json
from typing import Any

from fleet.errors import BadRequest

ROLES = ("system", "developer", "user", "assistant", "tool")


def _text_of(content: Any, where: str) -> str | None:
    """Message content as text: a string, or OpenAI's list of parts (text parts only)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise BadRequest(f"{where}: content parts of type {kind!r} are not supported by "
                                 "this model; it reads text only", code="unsupported_content")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise BadRequest(f"{where}: content must be a string or a list of parts")


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
        item["content"] = _text_of(message.get("content"), where) or ""
        if message.get("tool_calls"):
            item["tool_calls"] = [_tool_call_for_template(c) for c in message["tool_calls"]]
        normalized.append(item)
    return normalized


def render_chat(tokenizer: Any, template: str | None, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None,
                template_kwargs: dict[str, Any] | None = None) -> str:
    """The prompt text, generation prompt included; template errors become 400s."""
    if template is None and not getattr(tokenizer, "chat_template", None):
        raise BadRequest("this model has no chat template; use /v1/completions with a prompt",
                         code="no_chat_template")
    try:
        return tokenizer.apply_chat_template(
            normalize_messages(messages), tools=tools or None, chat_template=template,
            add_generation_prompt=True, tokenize=False, **(template_kwargs or {}),
        )
    except BadRequest:
        raise
    except Exception as exc:  # jinja2 raises TemplateError subclasses, templates raise_exception
        raise BadRequest(f"the model's chat template refused these messages: {exc}",
                         code="chat_template_error") from None
