"""A launched model as the client reaches it (`Client.get_model`), and the client's error: in a
module of their own so that the image and audio handles, which build on them, need not import
the client's package (the import would run in a circle)."""

from __future__ import annotations

from typing import Any, Protocol

import httpx


class _Calls(Protocol):
    """What a handle calls on its client (fleet.client.Client)."""

    _http: httpx.Client

    def describe_model(self, model_uid: str) -> dict[str, Any]: ...

    def _request(self, method: str, path: str, **kwargs: Any) -> Any: ...

    def _generate(self, path: str, body: dict[str, Any]) -> Any: ...


class FleetClientError(RuntimeError):
    """An error answer from the server: its HTTP status and the server's message."""

    def __init__(self, status_code: int, message: str, code: str | None = None):
        super().__init__(f"[{status_code}] {message}")
        self.status_code = status_code
        self.message = message
        self.code = code


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        error = response.json().get("error", {})
        message, code = error.get("message") or response.text, error.get("code")
    except (ValueError, AttributeError):
        message, code = response.text or response.reason_phrase, None
    raise FleetClientError(response.status_code, message, code)


class ModelHandle:
    def __init__(self, client: _Calls, model_uid: str):
        self._client = client
        self.model_uid = model_uid

    def describe(self) -> dict[str, Any]:
        return self._client.describe_model(self.model_uid)

    def create_embedding(self, input: str | list[str], **kwargs: Any) -> dict[str, Any]:
        return self._client._request(
            "POST", "/v1/embeddings", json={"model": self.model_uid, "input": input, **kwargs}
        )

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
             enable_thinking: bool | None = None,
             generate_config: dict[str, Any] | None = None) -> Any:
        """A chat completion; with `generate_config={"stream": True}` an iterator of chunks.
        The same arguments as Xinference's client; `enable_thinking` reaches the chat template
        of hybrid reasoning models (Qwen3)."""
        body: dict[str, Any] = {"model": self.model_uid, "messages": messages,
                                **(generate_config or {})}
        if tools is not None:
            body["tools"] = tools
        if enable_thinking is not None:
            body["chat_template_kwargs"] = {**(body.get("chat_template_kwargs") or {}),
                                            "enable_thinking": enable_thinking}
        return self._client._generate("/v1/chat/completions", body)

    def generate(self, prompt: str, generate_config: dict[str, Any] | None = None) -> Any:
        """A text completion of `prompt`; streamed like `chat`."""
        body = {"model": self.model_uid, "prompt": prompt, **(generate_config or {})}
        return self._client._generate("/v1/completions", body)

    def rerank(self, documents: list[str], query: str, top_n: int | None = None,
               return_documents: bool = False, return_len: bool = False,
               **kwargs: Any) -> dict[str, Any]:
        body = {"model": self.model_uid, "query": query, "documents": documents, "top_n": top_n,
                "return_documents": return_documents, "return_len": return_len, **kwargs}
        return self._client._request("POST", "/v1/rerank", json=body)
