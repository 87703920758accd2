from __future__ import annotations

import pytest

from fleet.generation.reasoning import ReasoningSplitter
from tests.generation.streams import chunkings

TAGS = ("<think>", "</think>")


def split(chunks: list[str], starts_inside: bool = False, tags: tuple[str, str] = TAGS,
          ) -> tuple[list[tuple[str, str]], tuple[str, str]]:
    splitter = ReasoningSplitter(*tags, starts_inside)
    return [splitter.feed(chunk) for chunk in chunks], splitter.finish()


def joined(chunks: list[str], **kwargs) -> tuple[str, str]:
    deltas, (last_thought, last_answer) = split(chunks, **kwargs)
    return ("".join(t for t, _ in deltas) + last_thought, "".join(a for _, a in deltas) + last_answer)


@pytest.mark.parametrize("text, starts_inside, expected", [
    ("<think>\nLet me add: 2 + 2 = 4.\n</think>\n\nThe answer is 4.", False,
     ("Let me add: 2 + 2 = 4.", "The answer is 4.")),
    ("  \n<think>thoughts</think>answer", False, ("thoughts", "answer")),
    ("Okay, the user wants 🎉.\n</think>\n\n Here it is: 🎉", True,
     ("Okay, the user wants 🎉.", "Here it is: 🎉")),
    ("<think>\n\n</think>\n\nHello!", False, ("", "Hello!")),
    ("Just an answer, with <think> inside it.", False, ("", "Just an answer, with <think> inside it.")),
    ("<thinking is a noun> here", False, ("", "<thinking is a noun> here")),
    ("<think>a < b and c </ d </thin k</think>done", False, ("a < b and c </ d </thin k", "done")),
    ("<think>never finished </thi", False, ("never finished </thi", "")),
    ("still thinking", True, ("still thinking", "")),
    ("", False, ("", "")),
    ("", True, ("", "")),
    ("<th", False, ("", "<th")),
])
def test_every_chunking_splits_the_same(text, starts_inside, expected):
    for chunks in chunkings(text):
        assert joined(chunks, starts_inside=starts_inside) == expected, chunks


def test_tags_are_never_sent_in_any_delta():
    text = "<think>reason</think>answer"
    for chunks in chunkings(text):
        deltas, last = split(chunks)
        for thought, answer in [*deltas, last]:
            assert "<" not in thought + answer and ">" not in thought + answer, chunks


def test_partial_end_tag_is_held_then_resolved():
    splitter = ReasoningSplitter(*TAGS, starts_inside=True)
    assert splitter.feed("step one</th") == ("step one", "")
    assert splitter.feed("ink>\n") == ("", "")
    assert splitter.feed("Answer") == ("", "Answer")
    assert splitter.finish() == ("", "")


def test_thought_streams_before_the_end_tag():
    splitter = ReasoningSplitter(*TAGS, starts_inside=False)
    assert splitter.feed("<think>") == ("", "")
    assert splitter.feed("first") == ("first", "")
    assert splitter.feed(" second") == (" second", "")


def test_answer_without_think_block_is_not_delayed_or_trimmed():
    splitter = ReasoningSplitter(*TAGS, starts_inside=False)
    assert splitter.feed("Hi") == ("", "Hi")
    assert splitter.feed("\n there") == ("", "\n there")


def test_other_tag_spellings():
    assert joined(list("◁think▷plan◁/think▷go"), tags=("◁think▷", "◁/think▷")) == ("plan", "go")
