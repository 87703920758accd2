"""The handle of an image model (`Client.get_model(uid)` of a model of type image): the same
methods and arguments as Xinference's RESTfulImageModelHandle, so code written for one runs on
the other. Images are given as bytes or as a path to a file; answers are OpenAI's
`{"created", "data": [{"url"} or {"b64_json"}]}`."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from fleet.client.handle import ModelHandle, _raise_for_error

ImageInput = str | bytes | Path


def _image_bytes(image: ImageInput) -> bytes:
    return image if isinstance(image, bytes) else Path(image).read_bytes()


def _form(model: str, **fields: Any) -> dict[str, str]:
    """Text fields of a multipart form: None left out, everything else as text; `kwargs` is
    the JSON string Xinference's API reads."""
    form = {"model": model}
    for name, value in fields.items():
        if value is not None:
            form[name] = value if isinstance(value, str) else str(value)
    return form


class ImageModelHandle(ModelHandle):
    def text_to_image(self, prompt: str, n: int = 1, size: str = "1024*1024",
                      response_format: str = "url", **kwargs: Any) -> dict[str, Any]:
        """`n` images of `size` ('WxH' or 'W*H'); kwargs: negative_prompt,
        num_inference_steps, guidance_scale, seed, request_id, and further pipeline
        arguments."""
        body = {"model": self.model_uid, "prompt": prompt, "n": n, "size": size,
                "response_format": response_format, "kwargs": json.dumps(kwargs)}
        return self._client._request("POST", "/v1/images/generations", json=body)

    def image_to_image(self, image: ImageInput, prompt: str, negative_prompt: str | None = None,
                       n: int = 1, size: str | None = None, response_format: str = "url",
                       **kwargs: Any) -> dict[str, Any]:
        """Images made from `image` and `prompt` (kwargs: strength, seed, ...)."""
        form = _form(self.model_uid, prompt=prompt, negative_prompt=negative_prompt, n=n,
                     size=size, response_format=response_format, kwargs=json.dumps(kwargs))
        return self._client._request("POST", "/v1/images/variations", data=form,
                                     files=[("image", ("image", _image_bytes(image)))])

    def inpainting(self, image: ImageInput, mask_image: ImageInput, prompt: str,
                   negative_prompt: str | None = None, n: int = 1, size: str | None = None,
                   response_format: str = "url", **kwargs: Any) -> dict[str, Any]:
        """`image` repainted where `mask_image` is white."""
        form = _form(self.model_uid, prompt=prompt, negative_prompt=negative_prompt, n=n,
                     size=size, response_format=response_format, kwargs=json.dumps(kwargs))
        files = [("image", ("image", _image_bytes(image))),
                 ("mask_image", ("mask_image", _image_bytes(mask_image)))]
        return self._client._request("POST", "/v1/images/inpainting", data=form, files=files)

    def ocr(self, image: ImageInput, **kwargs: Any) -> Any:
        """The text of `image` (lines joined by newlines); with `return_dict=True`,
        `{"task": "ocr", "lines": [{"text", "score", "box"}]}`."""
        form = _form(self.model_uid, kwargs=json.dumps(kwargs))
        return self._client._request("POST", "/v1/images/ocr", data=form,
                                     files=[("image", ("image", _image_bytes(image)))])

    def progress(self, request_id: str) -> float:
        """How far the request named `request_id` (in kwargs) is: 0.0 to 1.0."""
        return self._client._request("GET", f"/v1/requests/{request_id}/progress")["progress"]

    def image_bytes(self, item: dict[str, Any]) -> bytes:
        """The PNG of one `data` item of an answer: decoded from `b64_json`, or downloaded
        from its `url` (with this client's key: Fleet serves them under the same keys)."""
        if item.get("b64_json"):
            return base64.b64decode(item["b64_json"])
        response = self._client._http.get(item["url"])
        _raise_for_error(response)
        return response.content
