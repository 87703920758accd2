"""`fleet text2image`, `fleet image2image` and `fleet ocr`: call a launched image model from the
terminal. The images are written as PNG files into a folder (one line per file printed, so
scripts can read the paths); OCR prints the text."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from fleet.cli.generation_cmds import uid_option
from fleet.cli.model_cmds import client_for, endpoint_option
from fleet.client.images import ImageModelHandle


def _image_model(endpoint: str, model_uid: str) -> ImageModelHandle:
    model = client_for(endpoint).get_model(model_uid)
    if not isinstance(model, ImageModelHandle):
        raise click.ClickException(f"model {model_uid} is not an image model")
    return model


def _generate_options(command: Any) -> Any:
    """The options every image-making command takes."""
    for option in reversed([
        click.option("-p", "--prompt", required=True, help="What to draw."),
        click.option("-n", "--n", "count", type=int, default=1, show_default=True,
                     help="How many images."),
        click.option("-s", "--size", default=None, help="WIDTHxHEIGHT (default: the model's)."),
        click.option("--negative-prompt", default=None, help="What not to draw."),
        click.option("--steps", type=int, default=None, help="Denoising steps."),
        click.option("--guidance-scale", type=float, default=None,
                     help="How closely to follow the prompt."),
        click.option("--seed", type=int, default=None, help="Same seed, same images."),
        click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path),
                     default=Path("."), show_default=True, help="Folder to write the PNGs to."),
    ]):
        command = option(command)
    return command


def _kwargs(negative_prompt: str | None, steps: int | None, guidance_scale: float | None,
            seed: int | None) -> dict[str, Any]:
    given = {"negative_prompt": negative_prompt, "num_inference_steps": steps,
             "guidance_scale": guidance_scale, "seed": seed}
    return {k: v for k, v in given.items() if v is not None}


def _write(model: ImageModelHandle, answer: dict[str, Any], output: Path, stem: str) -> None:
    output.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for i, item in enumerate(answer["data"]):
        path = output / f"{stem}-{stamp}-{i}.png"
        path.write_bytes(model.image_bytes(item))
        click.echo(str(path))


@click.command()
@endpoint_option
@uid_option
@_generate_options
def text2image(endpoint: str, model_uid: str, prompt: str, count: int, size: str | None,
               negative_prompt: str | None, steps: int | None, guidance_scale: float | None,
               seed: int | None, output: Path) -> None:
    """Draw images from a prompt and write them as PNG files."""
    model = _image_model(endpoint, model_uid)
    answer = model.text_to_image(prompt, n=count, size=size or "auto", response_format="b64_json",
                                 **_kwargs(negative_prompt, steps, guidance_scale, seed))
    _write(model, answer, output, "text2image")


@click.command()
@endpoint_option
@uid_option
@click.option("-i", "--image", "image", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The image to start from.")
@click.option("-m", "--mask", default=None,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Repaint only where this mask is white (inpainting).")
@click.option("--strength", type=float, default=None,
              help="How far to move from the image (0 to 1).")
@_generate_options
def image2image(endpoint: str, model_uid: str, image: Path, mask: Path | None,
                strength: float | None, prompt: str, count: int, size: str | None,
                negative_prompt: str | None, steps: int | None, guidance_scale: float | None,
                seed: int | None, output: Path) -> None:
    """Redraw an image from a prompt (inpainting with --mask) and write PNG files."""
    model = _image_model(endpoint, model_uid)
    kwargs = _kwargs(None, steps, guidance_scale, seed)
    if strength is not None:
        kwargs["strength"] = strength
    if mask is not None:
        answer = model.inpainting(image, mask, prompt, negative_prompt=negative_prompt, n=count,
                                  size=size, response_format="b64_json", **kwargs)
    else:
        answer = model.image_to_image(image, prompt, negative_prompt=negative_prompt, n=count,
                                      size=size, response_format="b64_json", **kwargs)
    _write(model, answer, output, "inpainting" if mask is not None else "image2image")


@click.command()
@endpoint_option
@uid_option
@click.option("-i", "--image", "image", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The image to read.")
@click.option("--boxes", is_flag=True, help="Print each line with its box and score (JSON).")
def ocr(endpoint: str, model_uid: str, image: Path, boxes: bool) -> None:
    """Read the text of an image with an OCR model."""
    model = _image_model(endpoint, model_uid)
    if boxes:
        click.echo(json.dumps(model.ocr(image, return_dict=True)["lines"], indent=2))
    else:
        click.echo(model.ocr(image))


IMAGE_COMMANDS = (text2image, image2image, ocr)
