"""The real Transformers engine on a tiny random LLaVA (tests.vision_builders): a chat's images
reach the model through its own processor, and the engine's continuous batching gives the
model's own numbers for them: a prompt with images, prefilled beside text prompts and decoded in
the shared batch, continues exactly as the model's `generate` continues it alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.catalogue.registry import parse_family
from fleet.engines.transformers_llm import TransformersLLM
from fleet.errors import BadRequest
from fleet.generation.chat_template import render_chat
from fleet.generation.params import NewSequence, SamplingParams
from tests.vision_builders import TOKENS_PER_IMAGE, build_tiny_llava, png

RED, BLUE = png((230, 20, 20)), png((20, 20, 230), size=(64, 48))
GREEDY = SamplingParams(max_tokens=6, temperature=0.0)


def _family(path: Path, abilities: list[str]):
    return parse_family("LLM", {
        "model_name": "tiny-llava", "model_ability": abilities, "context_length": 256,
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                         "quantizations": ["none"], "model_uri": str(path)}]})


@pytest.fixture(scope="module")
def llava_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llava(tmp_path_factory.mktemp("vision") / "llava")


@pytest.fixture(scope="module")
def engine(llava_path: Path) -> TransformersLLM:
    engine = TransformersLLM(str(llava_path), _family(llava_path, ["chat", "vision"]), "cpu")
    engine.load()
    return engine


def _prompt(engine: TransformersLLM, parts: list[dict]) -> str:
    return render_chat(engine.chat_template, [{"role": "user", "content": parts}], None, None,
                       engine.template_tokens)


def _run_alone_with_generate(engine: TransformersLLM, text: str, images: list[bytes]) -> list[int]:
    """What the model's own `generate` makes of the prompt, greedily."""
    import torch

    prompt = engine.encode_with_images(text, images)
    ids = torch.tensor([prompt.ids])
    out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                **prompt.media, max_new_tokens=GREEDY.max_tokens,
                                do_sample=False, eos_token_id=None)
    return out[0, len(prompt.ids):].tolist()


def _run_in_batch(engine: TransformersLLM, sequences: list[NewSequence]) -> dict[int, list[int]]:
    tokens: dict[int, list[int]] = {s.seq_id: [] for s in sequences}
    for choice in engine.prefill(sequences):
        tokens[choice.seq_id].append(choice.token_id)
    for _ in range(GREEDY.max_tokens - 1):
        for choice in engine.decode():
            tokens[choice.seq_id].append(choice.token_id)
    engine.release([s.seq_id for s in sequences])
    return tokens


def test_images_become_their_tokens_in_the_prompt(engine):
    text = _prompt(engine, [{"type": "image"}, {"type": "text", "text": "What is it?"},
                            {"type": "image"}])
    assert text.count("<image>") == 2
    plain = engine.encode(text.replace("<image>", ""), add_special_tokens=False)
    prompt = engine.encode_with_images(text, [RED, BLUE])
    assert len(prompt.ids) == len(plain) + 2 * TOKENS_PER_IMAGE
    assert tuple(prompt.media["pixel_values"].shape) == (2, 3, 32, 32)


def test_a_prompt_with_images_in_the_batch_continues_as_generate_does_alone(engine):
    one = _prompt(engine, [{"type": "image"}, {"type": "text", "text": "What is it?"}])
    two = _prompt(engine, [{"type": "text", "text": "Compare"}, {"type": "image"},
                           {"type": "image"}])
    with_one, with_two = engine.encode_with_images(one, [RED]), engine.encode_with_images(two, [RED, BLUE])
    text_ids = engine.encode("Hello there, how are you?", add_special_tokens=False)
    tokens = _run_in_batch(engine, [
        NewSequence(1, with_one.ids, GREEDY, with_one.media),
        NewSequence(2, text_ids, GREEDY),
        NewSequence(3, with_two.ids, GREEDY, with_two.media),
    ])
    assert tokens[1] == _run_alone_with_generate(engine, one, [RED])
    assert tokens[3] == _run_alone_with_generate(engine, two, [RED, BLUE])
    assert engine.batch_size == 0


def test_the_image_changes_what_the_model_reads(engine):
    import torch

    text = _prompt(engine, [{"type": "image"}, {"type": "text", "text": "What is it?"}])
    logits = []
    for image in (RED, BLUE):
        prompt = engine.encode_with_images(text, [image])
        with torch.inference_mode():
            out = engine.model(input_ids=torch.tensor([prompt.ids]), **prompt.media)
        logits.append(out.logits[0, -1])
    assert not torch.allclose(logits[0], logits[1])


def test_a_broken_image_is_a_bad_request(engine):
    text = _prompt(engine, [{"type": "image"}, {"type": "text", "text": "What is it?"}])
    with pytest.raises(BadRequest) as refused:
        engine.encode_with_images(text, [b"\x89PNG\r\n\x1a\nnot really"])
    assert refused.value.code == "invalid_image" and "image 0" in refused.value.message


def test_a_family_without_vision_reads_no_images(llava_path):
    engine = TransformersLLM(str(llava_path), _family(llava_path, ["chat"]), "cpu")
    assert engine.reads_images is False
    with pytest.raises(BadRequest) as refused:
        engine.encode_with_images("<image>", [RED])
    assert refused.value.code == "no_vision"
