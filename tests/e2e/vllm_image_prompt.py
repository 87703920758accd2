"""Run in vLLM's environment by tests/e2e/test_vllm.py (`python -m tests.e2e.vllm_image_prompt
FOLDER`, FOLDER a vision model of tests.vision_builders): the vLLM engine's prompt for a chat with
one image and with two, beside the prompt vLLM itself reads for it (its `prompt_token_ids`).
Prints one JSON line, per chat: [the ids Fleet counts, the ids vLLM read]."""

from __future__ import annotations

import json
import sys
from typing import Any

from fleet.catalogue.registry import parse_family
from fleet.engines.launch_options import VLLMOptions
from fleet.engines.vllm_llm import VLLMLLM
from fleet.engines.vllm_scheduler import vllm_prompt, vllm_sampling_params
from fleet.generation.chat_template import render_chat
from fleet.generation.params import SamplingParams
from fleet.generation.scheduling import GenerationRequest
from tests.vision_builders import png

IMAGES = [png((230, 20, 20)), png((20, 20, 230), size=(64, 48))]


def _read_by_vllm(engine: VLLMLLM, request: GenerationRequest) -> list[int]:
    async def run() -> list[int]:
        read: list[int] = []
        async for output in engine._engine.generate(
                vllm_prompt(request), vllm_sampling_params(request.params),
                request_id=request.request_id):
            read = list(output.prompt_token_ids or read)
        return read

    assert engine._loop is not None
    return engine._loop.run_until_complete(run())


def main(folder: str) -> None:
    family = parse_family("LLM", {
        "model_name": "tiny-vision", "model_ability": ["chat", "vision"], "context_length": 512,
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                         "quantizations": ["none"], "model_uri": folder}]})
    engine = VLLMLLM(folder, family, "cpu", VLLMOptions(cpu_kv_cache_gib=1, max_num_seqs=2))
    engine.load()
    found: list[Any] = []
    try:
        for count in (1, 2):
            parts = [{"type": "text", "text": "What is in the picture?"},
                     *[{"type": "image"}] * count]
            text = render_chat(engine.chat_template, [{"role": "user", "content": parts}], None,
                               None, engine.template_tokens)
            prompt = engine.encode_with_images(text, IMAGES[:count])
            request = GenerationRequest(f"probe-{count}", prompt.ids,
                                        SamplingParams(max_tokens=1, temperature=0.0), 1,
                                        lambda events: None, prompt.media)
            found.append([prompt.ids, _read_by_vllm(engine, request)])
    finally:
        engine._engine.shutdown()
        engine._engine = None  # gone now, not at the interpreter's exit (its __del__ shuts down)
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1])
