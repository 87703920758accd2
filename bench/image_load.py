"""Images under load: Fleet's HTTP API against diffusers called in-process on the same pipeline,
in the same run.

The pipeline is the tests' tiny Stable Diffusion folder (random weights,
tests/image_builders.py), registered as a custom image model and launched on a real
`fleet local`; the size and steps are chosen so that the pipeline's compute dominates (256x256,
8 steps by default). Measured in alternating windows (this machine's speed drifts within a
minute; see common.interleaved): in-process one image per call and a batch of 8 per call, and
Fleet at concurrency 1 and 8 (one image per request, `b64_json`). Both sides encode PNG: an
answer is a file, not a tensor. Prints JSON with images/s and the ratios the targets are
stated in (>= 0.95 of in-process at concurrency 1, >= 0.9 of in-process batched at 8).

    python bench/image_load.py --size 256 --steps 8 --duration 60 --rounds 3
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import closed_loop, fleet_local, timed_calls  # noqa: E402

MODEL = "bench-tiny-sd"
BATCH = 8


def _png(image: Any) -> bytes:
    from fleet.cluster.replica.services.image import PNG_COMPRESS_LEVEL

    buffer = io.BytesIO()  # as Fleet writes its answers: the same work on both sides
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _in_process(folder: Path, device: str, size: int, steps: int) -> tuple[Any, Any]:
    """One call of one image, and one call of a batch, straight on diffusers."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), torch_dtype=torch.float32)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)

    def run(count: int, i: int) -> list[bytes]:
        images = pipe([f"a lighthouse at dusk, picture {i}"] * count, height=size, width=size,
                      num_inference_steps=steps, output_type="pil").images
        return [_png(image) for image in images]

    return (lambda i: run(1, i)), (lambda i: run(BATCH, i))


def _launch(endpoint: str, folder: Path) -> None:
    family = {"version": 2, "model_name": MODEL, "model_family": "stable_diffusion",
              "model_ability": ["text2image"], "model_uri": f"file://{folder}"}
    with httpx.Client(base_url=endpoint, timeout=600) as http:
        http.post("/v1/model_registrations/image",
                  json={"model": family, "persist": False}).raise_for_status()
        http.post("/v1/models", json={"model_name": MODEL, "model_type": "image",
                                      "model_uid": MODEL}).raise_for_status()


def _measure(single: Any, batched: Any, url: str, body: Any, window: float,
             rounds: int) -> list[dict[str, Any]]:
    per_round = []
    for _ in range(rounds):
        one = timed_calls(single, window)
        many = timed_calls(batched, window)
        per_round.append({
            "in_process_single": len(one) / sum(one),
            "in_process_batch": BATCH * len(many) / sum(many),
            "c1": closed_loop(url, body, 1, window)["requests_per_s"],
            "c8": closed_loop(url, body, BATCH, window)["requests_per_s"],
        })
    return per_round


def _report(per_round: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in per_round), 3)

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(r[a] / r[b] for r in per_round), 3)

    return {
        "images_per_s": {"in_process_one_by_one": median("in_process_single"),
                         f"in_process_batch_{BATCH}": median("in_process_batch"),
                         "fleet_c1": median("c1"), f"fleet_c{BATCH}": median("c8")},
        "ratios": {"c1_vs_in_process_one_by_one": ratio("c1", "in_process_single"),
                   f"c{BATCH}_vs_in_process_batched": ratio("c8", "in_process_batch")},
        "targets": {"c1_vs_in_process_one_by_one": 0.95,
                    f"c{BATCH}_vs_in_process_batched": 0.9},
        "rounds": len(per_round),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=256, help="width and height in pixels")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per image")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds per measurement, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="alternating windows of each side")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    args = parser.parse_args()

    import torch

    from tests.image_builders import tiny_sd_pipeline_folder

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = tiny_sd_pipeline_folder()
    single, batched = _in_process(folder, device, args.size, args.steps)
    with fleet_local() as endpoint:
        _launch(endpoint, folder)

        def body(i: int) -> dict[str, Any]:
            return {"model": MODEL, "prompt": f"a lighthouse at dusk, picture {i}",
                    "size": f"{args.size}x{args.size}", "num_inference_steps": args.steps,
                    "response_format": "b64_json"}

        window = max(1.0, args.duration / args.rounds)
        per_round = _measure(single, batched, f"{endpoint}/v1/images/generations", body,
                             window, args.rounds)
    print(json.dumps({"model": "tiny random Stable Diffusion (tests/image_builders.py)",
                      "device": device, "size": f"{args.size}x{args.size}",
                      "steps": args.steps, **_report(per_round)}, indent=2))


if __name__ == "__main__":
    main()
