"""`fleet chat` and `fleet generate`: talk to a launched model from the terminal, streamed.

Interactive when stdin is a terminal (a conversation for chat, one prompt after another for
generate); with `--prompt` or a piped stdin, one answer and exit, so scripts can use them."""

from __future__ import annotations

import sys
from typing import Any

import click

from fleet.cli.model_cmds import client_for, endpoint_option
from fleet.client import ModelHandle

uid_option = click.option("-u", "--model-uid", required=True, help="The launched model's UID.")
max_tokens_option = click.option("--max_tokens", "--max-tokens", "max_tokens", type=int,
                                  default=512, show_default=True, help="Most tokens per answer.")
temperature_option = click.option("--temperature", type=float, default=None,
                                  help="Sampling temperature (0: always the likeliest token).")
stream_option = click.option("--stream/--no-stream", default=True, show_default=True,
                             help="Print tokens as they come.")


def _show(answer: Any, stream: bool, chat: bool) -> str:
    """Print an answer (a response or a stream of chunks); returns its text."""
    if not stream:
        choice = answer["choices"][0]
        text = (choice["message"].get("content") or "") if chat else choice["text"]
        calls = choice.get("message", {}).get("tool_calls") if chat else None
        click.echo(text + (f"\n[tool calls] {calls}" if calls else ""))
        return text
    parts = []
    for chunk in answer:
        for choice in chunk.get("choices", []):
            piece = (choice["delta"].get("content") or "") if chat else choice.get("text", "")
            parts.append(piece)
            click.echo(piece, nl=False)
    click.echo()
    return "".join(parts)


def _prompts(prompt: str | None, label: str) -> Any:
    """The prompt(s) to answer: one given, all of piped stdin, or asked one by one."""
    if prompt is not None:
        yield prompt
    elif not sys.stdin.isatty():
        yield sys.stdin.read()
    else:
        while True:
            try:
                line = click.prompt(click.style(label, bold=True), prompt_suffix=" > ",
                                    default="", show_default=False)
            except (EOFError, click.Abort):
                return
            if line.strip().lower() in ("exit", "quit"):
                return
            if line.strip():
                yield line


@click.command()
@endpoint_option
@uid_option
@click.option("-p", "--prompt", default=None, help="Ask once and exit.")
@click.option("-s", "--system", default=None, help="A system prompt.")
@max_tokens_option
@temperature_option
@stream_option
def chat(endpoint: str, model_uid: str, prompt: str | None, system: str | None, max_tokens: int,
         temperature: float | None, stream: bool) -> None:
    """Chat with a launched model (type `exit` or Ctrl-D to leave)."""
    model: ModelHandle = client_for(endpoint).get_model(model_uid)
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    config = _config(max_tokens, temperature, stream)
    for question in _prompts(prompt, "User"):
        messages.append({"role": "user", "content": question})
        answer = _show(model.chat(messages, generate_config=config), stream, chat=True)
        messages.append({"role": "assistant", "content": answer})


@click.command()
@endpoint_option
@uid_option
@click.option("-p", "--prompt", default=None, help="Complete this text once and exit.")
@max_tokens_option
@temperature_option
@stream_option
def generate(endpoint: str, model_uid: str, prompt: str | None, max_tokens: int,
             temperature: float | None, stream: bool) -> None:
    """Continue text with a launched model."""
    model = client_for(endpoint).get_model(model_uid)
    config = _config(max_tokens, temperature, stream)
    for text in _prompts(prompt, "Prompt"):
        _show(model.generate(text, generate_config=config), stream, chat=False)


def _config(max_tokens: int, temperature: float | None, stream: bool) -> dict[str, Any]:
    config: dict[str, Any] = {"max_tokens": max_tokens, "stream": stream}
    if temperature is not None:
        config["temperature"] = temperature
    return config


GENERATION_COMMANDS = (chat, generate)
