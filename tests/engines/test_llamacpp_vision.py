"""Images in a chat on the real llama.cpp engine (xllamacpp): SmolLM2-135M's GGUF with a vision
projector built here with random weights (tests.gguf_builders.tiny_projector_gguf: 4 tokens an
image), driven through the engine and its real LlamaCppScheduler. The counts of the prompt's
tokens are checked against llama.cpp's own (the usage it reports after reading the prompt), the
answers' events against the scheduler's contract; a text-only prompt on a projector launch
(which then goes through llama.cpp's listener) answers as on a launch without one. Refused: an
image to a model launched without a projector, a file llama.cpp cannot read as an image, and
projector files that are not projectors, or not this model's."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.catalogue.registry import builtin_families
from fleet.engines.launch_options import LlamaCppLLMOptions
from fleet.engines.llamacpp_llm import LlamaCppLLM
from fleet.engines.llamacpp_scheduler import LlamaCppScheduler, completion_body
from fleet.engines.llamacpp_vision import IMAGE_TOKEN, LlamaCppMedia
from fleet.errors import BadRequest
from fleet.generation.params import SamplingParams
from fleet.generation.scheduling import GenerationRequest
from fleet.messages import Event, StreamDone, StreamFailed, TokenEvent
from tests.builders import _smollm2_gguf
from tests.gguf_builders import tiny_projector_gguf
from tests.vision_builders import png

TOKENS_PER_IMAGE = 4  # the tiny projector: 32-pixel images in 16-pixel patches
GREEDY = SamplingParams(max_tokens=6, temperature=0.0)


RED, BLUE = png((230, 20, 20)), png((20, 20, 230), size=(64, 48))


def _webp(color: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buffer, "WEBP")
    return buffer.getvalue()


def _engine(projector: Path | None) -> LlamaCppLLM:
    family = builtin_families("LLM")["smollm2-instruct"]
    options = LlamaCppLLMOptions(n_parallel=2, context_length=1024,
                                 multimodal_projector=str(projector) if projector else None)
    engine = LlamaCppLLM(str(_smollm2_gguf()), family, None, options)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_projector_gguf(tmp_path_factory.mktemp("mmproj") / "mmproj-tiny.gguf")


@pytest.fixture(scope="module")
def seeing(projector: Path) -> Iterator[LlamaCppLLM]:
    engine = _engine(projector)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def blind() -> Iterator[LlamaCppLLM]:
    engine = _engine(None)
    yield engine
    engine.close()


def _chat(marker: str, images: int) -> str:
    """A rendered ChatML prompt with `images` markers, as the LLM service writes one."""
    return (f"<|im_start|>user\nWhat is in the picture?{marker * images}<|im_end|>\n"
            "<|im_start|>assistant\n")


def _llama_cpp_prompt_tokens(engine: LlamaCppLLM, ids: list[int], media: Any = None) -> int:
    """The prompt's tokens as llama.cpp itself counted them, reading it for an answer."""
    chunks: list[dict[str, Any]] = []
    engine.completions(completion_body(ids, SamplingParams(max_tokens=1, temperature=0.0), media),
                       lambda chunk: chunks.append(chunk) and False)
    return int(chunks[-1]["usage"]["prompt_tokens"])


def test_image_tokens_are_counted_as_llama_cpp_reads_them(seeing: LlamaCppLLM):
    marker = seeing.image_marker
    assert seeing.reads_images and marker and marker.startswith("<__media")
    plain = seeing.encode(_chat("", 0), add_special_tokens=False)
    one = seeing.encode_with_images(_chat(marker, 1), [RED])
    two = seeing.encode_with_images(_chat(marker, 2), [RED, BLUE])
    assert len(one.ids) == len(plain) + TOKENS_PER_IMAGE
    assert len(two.ids) == len(plain) + 2 * TOKENS_PER_IMAGE
    assert one.ids.count(IMAGE_TOKEN) == TOKENS_PER_IMAGE
    assert isinstance(two.media, LlamaCppMedia) and len(two.media.images) == 2
    assert two.media.prompt.count(marker) == 2
    # What llama.cpp counts when it reads them is what the usage will say.
    assert _llama_cpp_prompt_tokens(seeing, one.ids, one.media) == len(one.ids)
    assert _llama_cpp_prompt_tokens(seeing, two.ids, two.media) == len(two.ids)
    assert _llama_cpp_prompt_tokens(seeing, plain) == len(plain)


class _Collector:
    """A request's events as the scheduler delivers them, from its slot threads."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()
        self.first_token = threading.Event()

    def deliver(self, events: list[Event]) -> None:
        self.events.extend(events)
        if any(isinstance(e, TokenEvent) for e in events):
            self.first_token.set()
        if any(isinstance(e, StreamDone | StreamFailed) for e in events):
            self.done.set()

    def texts(self, n: int) -> list[str]:
        return ["".join(e.text for e in self.events if isinstance(e, TokenEvent) and e.index == i)
                for i in range(n)]

    def finishes(self) -> list[TokenEvent]:
        return [e for e in self.events if isinstance(e, TokenEvent) and e.finish_reason]


@pytest.fixture
def scheduler(seeing: LlamaCppLLM) -> Iterator[LlamaCppScheduler]:
    running = seeing.make_scheduler(max_running=2, max_requests=8)
    assert isinstance(running, LlamaCppScheduler)
    worker = threading.Thread(target=running.run_forever, daemon=True)
    worker.start()
    yield running
    running.stop()
    worker.join(10)


def _run(scheduler: LlamaCppScheduler, request_id: str, ids: list[int], media: Any = None,
         n: int = 1, params: SamplingParams = GREEDY) -> _Collector:
    collector = _Collector()
    scheduler.submit(GenerationRequest(request_id, ids, params, n, collector.deliver, media))
    assert collector.done.wait(120), collector.events
    return collector


def test_chats_with_one_image_and_two_are_answered_by_the_scheduler(seeing, scheduler):
    marker = seeing.image_marker
    one = seeing.encode_with_images(_chat(marker, 1), [RED])
    answered = _run(scheduler, "one-image", one.ids, one.media, n=2)
    assert isinstance(answered.events[-1], StreamDone), answered.events
    finishes = answered.finishes()
    assert sorted(e.index for e in finishes) == [0, 1]
    assert all(e.finish_reason in ("stop", "length") and 1 <= e.completion_tokens <= 6
               for e in finishes)
    first, second = answered.texts(2)
    assert first and first == second  # greedy: both choices read the same image the same way
    two = seeing.encode_with_images(_chat(marker, 2), [RED, BLUE])
    answered = _run(scheduler, "two-images", two.ids, two.media)
    assert isinstance(answered.events[-1], StreamDone), answered.events
    assert answered.texts(1)[0] and answered.finishes()[0].completion_tokens >= 1


def test_text_answers_on_a_projector_launch_are_those_of_a_launch_without(seeing, blind,
                                                                         scheduler):
    ids = seeing.encode(_chat("", 0), add_special_tokens=False)
    assert ids == blind.encode(_chat("", 0), add_special_tokens=False)
    params = SamplingParams(max_tokens=8, temperature=0.0, logprobs=True, top_logprobs=2)
    through_listener = _run(scheduler, "text-only", ids, params=params)
    blind_scheduler = blind.make_scheduler(max_running=1, max_requests=2)
    assert isinstance(blind_scheduler, LlamaCppScheduler)
    worker = threading.Thread(target=blind_scheduler.run_forever, daemon=True)
    worker.start()
    try:
        through_binding = _run(blind_scheduler, "text-only", ids, params=params)
    finally:
        blind_scheduler.stop()
        worker.join(10)
    assert through_listener.texts(1) == through_binding.texts(1)
    assert [e.completion_tokens for e in through_listener.finishes()] == \
        [e.completion_tokens for e in through_binding.finishes()]
    tokens = [entry["token"] for e in through_listener.events if isinstance(e, TokenEvent)
              for entry in e.logprobs or []]
    assert "".join(tokens) == through_listener.texts(1)[0]
    assert all(len(entry["top_logprobs"]) == 2 for e in through_listener.events
               if isinstance(e, TokenEvent) for entry in e.logprobs or [])


def test_a_cancelled_image_request_frees_its_slot(seeing, scheduler):
    marker = seeing.image_marker
    prompt = seeing.encode_with_images(_chat(marker, 1), [RED])
    # No end of text: left alone, it would run 990 tokens (over 5 s at SmolLM2's speed here).
    endless = SamplingParams(max_tokens=990, temperature=0.0,
                             logit_bias={0: -100.0, 1: -100.0, 2: -100.0})
    collector = _Collector()
    scheduler.submit(GenerationRequest("endless", prompt.ids, endless, 1, collector.deliver,
                                       prompt.media))
    assert collector.first_token.wait(120)
    scheduler.cancel("endless")
    deadline = time.monotonic() + 5
    while any(slot["is_processing"] for slot in seeing._get("/slots")):
        assert time.monotonic() < deadline, "llama.cpp still runs the cancelled request"
        time.sleep(0.1)
    assert not collector.done.is_set()  # cancelled: no closing event


def test_a_model_without_projector_refuses_images(blind: LlamaCppLLM):
    assert not blind.reads_images and blind.image_marker is None
    with pytest.raises(BadRequest) as refused:
        blind.encode_with_images(_chat("<__media__>", 1), [RED])
    assert refused.value.code == "no_vision"


def test_a_webp_image_is_read_and_a_file_that_is_no_image_is_a_400(seeing: LlamaCppLLM):
    marker = seeing.image_marker or ""
    webp = seeing.encode_with_images(_chat(marker, 1), [_webp((20, 200, 20))])
    plain = seeing.encode(_chat("", 0), add_special_tokens=False)
    assert len(webp.ids) == len(plain) + TOKENS_PER_IMAGE  # llama.cpp's decoder has no WebP
    assert _llama_cpp_prompt_tokens(seeing, webp.ids, webp.media) == len(webp.ids)
    # Refused here (Pillow reads no image in it), and by llama.cpp (a broken PNG).
    for broken in (b"not an image", b"\x89PNG\r\n\x1a\n broken"):
        with pytest.raises(BadRequest) as refused:
            seeing.encode_with_images(_chat(marker, 2), [RED, broken])
        assert refused.value.code == "invalid_image" and "image 2" in refused.value.message


@pytest.mark.parametrize("kind", ["garbage", "a language model", "another model's"])
def test_a_bad_projector_fails_the_load_saying_why(tmp_path: Path, kind: str):
    if kind == "garbage":
        bad = tmp_path / "mmproj.gguf"
        bad.write_bytes(b"GGUF" + bytes(range(256)) * 8)
        words = "is not a readable GGUF file"
    elif kind == "a language model":
        bad, words = _smollm2_gguf(), "is not a multimodal projector: its GGUF architecture is 'llama'"
    else:  # a projector for a model 64 wide, not SmolLM2's 576
        bad = tiny_projector_gguf(tmp_path / "mmproj-narrow.gguf", projection_dim=64)
        words = "failed to load with this model"
    engine = LlamaCppLLM(str(_smollm2_gguf()), builtin_families("LLM")["smollm2-instruct"], None,
                         LlamaCppLLMOptions(n_parallel=1, context_length=512,
                                            multimodal_projector=str(bad)))
    with pytest.raises((ValueError, RuntimeError)) as failed:
        engine.load()
    assert words in str(failed.value) and str(bad) in str(failed.value)
    if kind == "another model's":
        assert "576" in str(failed.value) and "64" in str(failed.value)  # llama.cpp's own words
    assert engine.server is None and not engine.reads_images
