from __future__ import annotations

import random

import pytest

from fleet.generation.stops import StopStringMatcher, pending_prefix_length
from tests.generation.streams import chunkings


def run(stops: list[str], chunks: list[str]) -> tuple[list[str], list[bool], str]:
    matcher = StopStringMatcher(stops)
    outputs, flags = [], []
    for chunk in chunks:
        text, stopped = matcher.feed(chunk)
        outputs.append(text)
        flags.append(stopped)
    return outputs, flags, matcher.flush()


def reference(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the earliest stop string, computed on the whole text at once."""
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[:min(hits)], True) if hits else (text, False)


def test_no_stops_passes_text_through_at_once():
    outputs, flags, rest = run([], ["Hel", "lo <", "|end|>"])
    assert outputs == ["Hel", "lo <", "|end|>"]
    assert flags == [False, False, False]
    assert rest == ""


def test_empty_stop_strings_are_ignored():
    outputs, flags, _ = run(["", "END"], ["a", "b"])
    assert outputs == ["a", "b"] and flags == [False, False]


def test_stop_within_one_delta_cuts_before_it_and_stays_stopped():
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("Hello STOP world") == ("Hello ", True)
    assert matcher.feed("more") == ("", True)
    assert matcher.flush() == ""


def test_possible_start_of_a_stop_is_held_then_released():
    matcher = StopStringMatcher(["<|end|>"])
    assert matcher.feed("abc<|e") == ("abc", False)
    assert matcher.feed("x") == ("<|ex", False)
    assert matcher.feed("<|") == ("", False)
    assert matcher.flush() == "<|"


def test_stop_spanning_deltas_is_never_sent():
    outputs, flags, rest = run(["<|end|>"], list("answer<|end|>after"))
    assert "".join(outputs) == "answer"
    assert flags.index(True) == len("answer<|end|>") - 1  # stops on the delta that completes it
    assert all(flags[flags.index(True):])
    assert rest == ""


def test_earliest_stop_wins_even_when_a_later_one_completes_first():
    # "bc" is complete at "abc", but "abcd" began earlier: wait to see which one it is.
    assert run(["abcd", "bc"], list("abcd"))[0] == ["", "", "", ""]
    outputs, flags, _ = run(["abcd", "bc"], list("abcx"))
    assert "".join(outputs) == "a" and flags[-1]


def test_overlapping_partial_match_is_not_lost():
    outputs, flags, rest = run(["aab"], list("aaab"))
    assert "".join(outputs) == "a" and flags[-1] and rest == ""


@pytest.mark.parametrize("text, stops", [
    ("The answer is 42.\nObservation: done", ["\nObservation:", "\n\n"]),
    ("no stop in here at all, <almost> </s", ["</s>", "<|im_end|>"]),
    ("emoji 🎉 then ###END### and more", ["###END###", "END###"]),
    ("repeat ababab abac", ["abac", "ababac"]),
    ("", ["x"]),
])
def test_any_chunking_matches_the_whole_text_answer(text, stops):
    expected, expected_stop = reference(text, stops)
    for chunks in chunkings(text):
        outputs, flags, rest = run(stops, chunks)
        sent = ""
        for output in outputs:
            sent += output
            assert expected.startswith(sent)  # never sends text it might have to take back
        assert sent + rest == expected
        assert any(flags) == expected_stop


def test_random_texts_against_reference():
    rng = random.Random(1234)
    for _ in range(300):
        text = "".join(rng.choice("ab<|>x") for _ in range(rng.randint(0, 30)))
        stops = ["".join(rng.choice("ab<|>") for _ in range(rng.randint(1, 4))) for _ in range(2)]
        expected, expected_stop = reference(text, stops)
        for chunks in chunkings(text, seeds=3):
            outputs, flags, rest = run(stops, chunks)
            assert ("".join(outputs) + rest, any(flags)) == (expected, expected_stop), (text, stops, chunks)


def test_pending_prefix_length():
    assert pending_prefix_length("abc<|e", ["<|end|>"]) == 3
    assert pending_prefix_length("abc", ["<|end|>"]) == 0
    assert pending_prefix_length("<|end|>", ["<|end|>"]) == 0  # complete is not pending
    assert pending_prefix_length("xab", ["abc", "bz"]) == 2


def test_the_matcher_names_the_stop_string_it_met():
    """The answer names the stop string that ended it (Anthropic's stop_sequence): the one that
    begins first, the first listed when two begin at the same place."""
    matcher = StopStringMatcher(["world", "lo w", "zzz"])
    first, stopped = matcher.feed("Hel")
    assert not stopped and matcher.matched is None
    rest, stopped = matcher.feed("lo world")
    assert (first + rest, stopped, matcher.matched) == ("Hel", True, "lo w")
    tie = StopStringMatcher(["ab", "abc"])
    assert tie.feed("xabc") == ("x", True) and tie.matched == "ab"
    never = StopStringMatcher(["zzz"])
    assert never.feed("text z") == ("text ", False)
    assert never.flush() == "z" and never.matched is None
