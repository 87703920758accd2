from __future__ import annotations

import random
from typing import Any

import pytest

from fleet.generation.detokenizer import REPLACEMENT, IncrementalDetokenizer

TOKENIZERS = ["byte_level_tokenizer", "metaspace_tokenizer"]
TEXTS = [
    "Hello world, this is a small corpus.",
    "Grüße aus München! 日本語のテキスト",
    "Rocket 🚀 launch, family 👨‍👩‍👧 and thumbs 👍🏽!",
    "한국어 텍스트는 어휘에 없다",  # not in the training corpus: byte tokens only
    "  two  spaces\n\n\tand a tab  ",
    "x😀y🎉z",
    "def add(x, y):\n    return x + y\n",
]


@pytest.fixture(params=TOKENIZERS)
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


def stream(tokenizer: Any, ids: list[int]) -> list[str]:
    detokenizer = IncrementalDetokenizer(tokenizer)
    return [detokenizer.add(i) for i in ids] + [detokenizer.flush()]


def expected(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_equals_decode(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False)
    pieces = stream(tokenizer, ids)
    assert "".join(pieces) == expected(tokenizer, ids)
    assert expected(tokenizer, ids).strip() == text.strip()  # the tokenizer itself round-trips
    assert not any(REPLACEMENT in piece for piece in pieces)  # half characters are never sent


def test_random_texts_and_tokenizations(tokenizer):
    # Encoding pieces apart gives token sequences a plain `encode` would not (spaces, byte tokens).
    words = ["the", " answer", " 42", "ü", "语", "🚀", "👍🏽", "한", "\n", " ", "é", "x"]
    rng = random.Random(7)
    for _ in range(150):
        ids = [i for _ in range(rng.randint(1, 12))
               for i in tokenizer.encode(rng.choice(words), add_special_tokens=False)]
        assert "".join(stream(tokenizer, ids)) == expected(tokenizer, ids), ids


def test_split_character_is_held_until_complete(byte_level_tokenizer):
    ids = byte_level_tokenizer.encode("a🚀", add_special_tokens=False)
    assert len(ids) >= 3  # the emoji is not in the vocabulary: several byte tokens
    assert stream(byte_level_tokenizer, ids) == ["a"] + [""] * (len(ids) - 2) + ["🚀", ""]


def test_leading_space_comes_from_the_previous_token(metaspace_tokenizer):
    ids = metaspace_tokenizer.encode("Hello world", add_special_tokens=False)
    pieces = stream(metaspace_tokenizer, ids)
    word = next(i for i, p in enumerate(pieces) if p.startswith(" "))
    assert word > 0 and pieces[word].strip() and pieces[0] == "Hello"
    # Decoding the token alone drops its space: what a naive streamer would get wrong.
    assert metaspace_tokenizer.decode([ids[word]]) == pieces[word].lstrip()


def test_special_tokens_are_skipped(byte_level_tokenizer):
    tok = byte_level_tokenizer
    special = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    ids = (tok.encode("Hi 🚀", add_special_tokens=False)[:-1] + special
           + tok.encode("🚀 there", add_special_tokens=False))
    text = "".join(stream(tok, ids))
    assert text == expected(tok, ids)
    assert "<|im" not in text and "there" in text


def test_unfinished_character_is_flushed_as_decode_shows_it(byte_level_tokenizer):
    ids = byte_level_tokenizer.encode("ok🚀", add_special_tokens=False)[:-1]
    pieces = stream(byte_level_tokenizer, ids)
    assert "".join(pieces[:-1]) == "ok"
    assert pieces[-1] == expected(byte_level_tokenizer, ids)[2:] and pieces[-1].endswith(REPLACEMENT)


def test_invalid_bytes_are_not_held_forever(byte_level_tokenizer):
    continuation = byte_level_tokenizer.convert_tokens_to_ids("Ģ")  # byte 0x80 alone: never valid
    ids = [continuation] * 20
    pieces = stream(byte_level_tokenizer, ids)
    assert "".join(pieces) == expected(byte_level_tokenizer, ids) == REPLACEMENT * 20
    assert any(pieces[:IncrementalDetokenizer.MAX_HELD_TOKENS])


def test_each_token_decodes_a_bounded_window(byte_level_tokenizer):
    windows: list[int] = []

    class Recording:
        def decode(self, ids: list[int], **kwargs: Any) -> str:
            windows.append(len(ids))
            return byte_level_tokenizer.decode(ids, **kwargs)

    text = " ".join(TEXTS) * 8
    ids = byte_level_tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) > 1000
    assert "".join(stream(Recording(), ids)) == expected(byte_level_tokenizer, ids)
    # The previous delta's tokens plus the held ones: a few tokens, however long the text.
    assert max(windows) <= 8
