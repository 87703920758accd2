"""The vision families' chat templates, rendered through Fleet's one renderer: a user's message
that holds images reaches the template as parts (text parts and `{"type": "image"}`), and the
template writes each image where it stands as the placeholder that the model's own processor
expands into the image's tokens, exactly once per image and nowhere else. The placeholders and
the way each model joins a message's parts were checked against the models' own chat templates
and the Transformers processors (qwen2_vl/qwen3_vl: `<|image_pad|>` inside the vision markers;
gemma3: its `boi_token`; mllama: `<|image|>`; pixtral: `[IMG]`; internvl: the context token
after which its -hf template writes a newline; glm4v: `<|image|>` between the image markers;
MiniCPM-V 2.6's remote processor: `(<image>./</image>)`, its parts one per line)."""

from __future__ import annotations

import pytest

from fleet.catalogue.registry import builtin_families
from fleet.generation.chat_template import render_chat, with_image_markers

FAMILIES = builtin_families("LLM")
QWEN_VL = "<|vision_start|><|image_pad|><|vision_end|>"
GLM_V = "<|begin_of_image|><|image|><|end_of_image|>"
PLACEHOLDERS = {
    "qwen2-vl-instruct": QWEN_VL,
    "qwen2.5-vl-instruct": QWEN_VL,
    "QvQ-72B-Preview": QWEN_VL,
    "Qwen3-VL-Instruct": QWEN_VL,
    "Qwen3-VL-Thinking": QWEN_VL,
    "qwen3.5": QWEN_VL,
    "gemma-3-it": "<start_of_image>",
    "llama-3.2-vision-instruct": "<|image|>",
    "mistral-small-3.1-instruct": "[IMG]",
    "MiniCPM-V-2.6": "(<image>./</image>)",
    "InternVL3": "<IMG_CONTEXT>\n",
    "glm-4.1v-thinking": GLM_V,
    "glm-4.5v": GLM_V,
}
# How a model's own template joins a message's parts, where it does not just write them one after
# the other: MiniCPM-V puts each on its own line, Gemma 3 trims each text.
LINE_PER_PART = {"MiniCPM-V-2.6"}
TRIMS_EACH_TEXT = {"gemma-3-it"}
IMAGE = {"type": "image"}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def joined(name: str, parts: list[dict]) -> str:
    """The user's text as the model's own template writes the parts: what the family's
    template must write for them."""
    pieces = []
    for part in parts:
        if part["type"] == "image":
            pieces.append(PLACEHOLDERS[name])
        else:
            pieces.append(part["text"].strip() if name in TRIMS_EACH_TEXT else part["text"])
    return ("\n" if name in LINE_PER_PART else "").join(pieces)


def test_every_vision_family_names_its_placeholder():
    vision = {name for name, family in FAMILIES.items() if "vision" in family.abilities}
    assert vision == set(PLACEHOLDERS)


# One question about one image, which comes first (as the models' cards ask): the whole prompt.
ONE_IMAGE = {
    "qwen2-vl-instruct": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                         f"{QWEN_VL}What is this?<|im_end|>\n<|im_start|>assistant\n",
    "QvQ-72B-Preview": "<|im_start|>system\nYou are a helpful and harmless assistant. You are Qwen developed "
                       "by Alibaba. You should think step-by-step.<|im_end|>\n<|im_start|>user\n"
                       f"{QWEN_VL}What is this?<|im_end|>\n<|im_start|>assistant\n",
    "Qwen3-VL-Instruct": f"<|im_start|>user\n{QWEN_VL}What is this?<|im_end|>\n<|im_start|>assistant\n",
    "Qwen3-VL-Thinking": f"<|im_start|>user\n{QWEN_VL}What is this?<|im_end|>\n<|im_start|>assistant\n"
                         "<think>\n",
    "qwen3.5": f"<|im_start|>user\n{QWEN_VL}What is this?<|im_end|>\n<|im_start|>assistant\n<think>\n",
    "gemma-3-it": "<bos><start_of_turn>user\n<start_of_image>What is this?<end_of_turn>\n"
                  "<start_of_turn>model\n",
    "llama-3.2-vision-instruct": "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
                                 "<|image|>What is this?<|eot_id|>"
                                 "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "mistral-small-3.1-instruct": "<s>[INST][IMG]What is this?[/INST]",
    "MiniCPM-V-2.6": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                     "(<image>./</image>)\nWhat is this?<|im_end|>\n<|im_start|>assistant\n",
    "InternVL3": "<|im_start|>user\n<IMG_CONTEXT>\nWhat is this?<|im_end|>\n<|im_start|>assistant\n",
    "glm-4.1v-thinking": f"[gMASK]<sop><|user|>\n{GLM_V}What is this?<|assistant|>\n",
    "glm-4.5v": f"[gMASK]<sop><|user|>\n{GLM_V}What is this?<|assistant|>\n",
}
ONE_IMAGE["qwen2.5-vl-instruct"] = ONE_IMAGE["qwen2-vl-instruct"]


def test_every_vision_family_has_its_one_image_prompt():
    assert set(ONE_IMAGE) == set(PLACEHOLDERS)


@pytest.mark.parametrize("name", sorted(ONE_IMAGE))
def test_one_image_is_the_models_own_prompt(name):
    chat = [{"role": "user", "content": [IMAGE, text("What is this?")]}]
    assert render_chat(FAMILIES[name].chat_template, chat) == ONE_IMAGE[name]


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_two_images_are_written_in_their_places_and_nowhere_else(name):
    parts = [text("Compare "), IMAGE, text(" with "), IMAGE, text(" please.")]
    chat = [{"role": "system", "content": "You answer in one sentence."},
            {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": parts}]
    template, placeholder = FAMILIES[name].chat_template, PLACEHOLDERS[name]
    prompt = render_chat(template, chat)
    assert prompt.count(placeholder) == 2, prompt
    assert joined(name, parts) in prompt
    first, second = prompt.index(placeholder), prompt.rindex(placeholder)
    assert prompt.index("Compare") < first < prompt.index("with") < second < prompt.index("please.")
    # The turn is the one a text message would make: only the images differ.
    as_text = [*chat[:-1], {"role": "user", "content": joined(name, parts)}]
    assert prompt == render_chat(template, as_text)


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_images_stay_in_the_earlier_turn_that_holds_them(name):
    chat = [{"role": "user", "content": [IMAGE, text("What colour is it?")]},
            {"role": "assistant", "content": "Red."}, {"role": "user", "content": "And the shape?"}]
    template, placeholder = FAMILIES[name].chat_template, PLACEHOLDERS[name]
    prompt = render_chat(template, chat)
    assert prompt.count(placeholder) == 1
    assert prompt.index(placeholder) < prompt.index("What colour is it?") < prompt.index("Red.")
    as_text = [{"role": "user", "content": joined(name, chat[0]["content"])}, *chat[1:]]
    assert prompt == render_chat(template, as_text)


@pytest.mark.parametrize("name", sorted(PLACEHOLDERS))
def test_a_media_marker_is_written_as_text_in_the_images_place(name):
    # llama.cpp's engine finds its images by a marker of its own, written in place of each part.
    marker = "<__media_marker__>"
    chat = [{"role": "user", "content": [text("Compare "), IMAGE, text(" with "), IMAGE]}]
    prompt = render_chat(FAMILIES[name].chat_template, with_image_markers(chat, marker))
    assert prompt.count(marker) == 2 and PLACEHOLDERS[name] not in prompt
    assert prompt.index("Compare") < prompt.index(marker) < prompt.index("with")


@pytest.mark.parametrize("name", ["qwen3.5", "glm-4.5v"])
def test_images_do_not_stop_thinking_from_being_turned_off(name):
    chat = [{"role": "user", "content": [IMAGE, text("What is this?")]}]
    thinking = render_chat(FAMILIES[name].chat_template, chat)
    direct = render_chat(FAMILIES[name].chat_template, chat, template_kwargs={"enable_thinking": False})
    assert PLACEHOLDERS[name] in direct and direct != thinking
    assert direct.endswith({"qwen3.5": "<think>\n\n</think>\n\n",
                            "glm-4.5v": "What is this?/nothink<|assistant|>\n<think></think>\n"}[name])
