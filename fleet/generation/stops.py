"""Stop strings over a stream of text deltas.

A stop string can span several deltas (token boundaries fall anywhere), so text that might be the
beginning of one is held back until the next delta settles it. The client never sees any part of
the stop string, and sees everything before it.
"""

from __future__ import annotations

from collections.abc import Iterable


def pending_prefix_length(text: str, targets: Iterable[str]) -> int:
    """The length of the longest end of `text` that is the start of (but not all of) a target.

    That much text has to be held back: the next delta may complete the target.
    """
    best = 0
    for target in targets:
        for size in range(min(len(text), len(target) - 1), best, -1):
            if text.endswith(target[:size]):
                best = size
                break
    return best


class StopStringMatcher:
    """Cuts a text stream at the earliest occurrence of any stop string.

    `feed` returns (text safe to send now, stopped); `matched` is then the stop string met (the
    answer names it: Anthropic's `stop_sequence`, vLLM's `stop_reason`). Only a short tail
    (shorter than the longest stop string) is ever held, so each call costs time in proportion
    to its delta, not the answer.
    """

    def __init__(self, stops: list[str] | tuple[str, ...]):
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        if not self._stops:
            return text, False
        buffer = self._held + text
        hits = [(i, stop) for stop in self._stops if (i := buffer.find(stop)) >= 0]
        # A stop that has begun but not finished may still start earlier than one already complete.
        maybe = len(buffer) - pending_prefix_length(buffer, self._stops)
        if hits:
            first, stop = min(hits, key=lambda hit: hit[0])  # the first listed, at a tie
            if first <= maybe:
                self.stopped, self.matched = True, stop
                self._held = ""
                return buffer[:first], True
        self._held = buffer[maybe:]
        return buffer[:maybe], False

    def flush(self) -> str:
        """What is still held at the end of the stream (nothing once a stop string was met)."""
        held, self._held = self._held, ""
        return "" if self.stopped else held
