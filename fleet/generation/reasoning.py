"""Reasoning models write their thoughts between tags (`<think>...</think>`) before the answer.

OpenAI-style clients expect those thoughts apart, as `reasoning_content`, so the stream is split in
two as it arrives. The tags may be cut across deltas anywhere, so a possible partial tag is held
back until the next delta settles it; the tags themselves are never sent.
"""

from __future__ import annotations

from fleet.generation.stops import pending_prefix_length

_OPENING, _THINKING, _ANSWER = "opening", "thinking", "answer"


class ReasoningSplitter:
    """Splits a text stream into (thought, answer) deltas.

    `starts_inside` is for chat templates that open the think block in the prompt (DeepSeek-R1,
    QwQ): the model's text is thought until the end tag. Otherwise the model may open the block
    itself as its first output, or not at all, in which case everything is answer.
    Whitespace at the edges of the thought and at the start of the answer is dropped: templates
    put newlines around the tags, and an empty think block must not yield a blank thought.
    """

    def __init__(self, start_tag: str, end_tag: str, starts_inside: bool):
        self._start, self._end = start_tag, end_tag
        self._state = _THINKING if starts_inside else _OPENING
        self._held = ""
        self._thought_started = False  # leading whitespace of the thought is dropped until then
        self._answer_started = False

    def feed(self, text: str) -> tuple[str, str]:
        thought, answer = "", ""
        if self._state == _OPENING:
            text = self._open(text)
        if self._state == _THINKING:
            thought, text = self._think(text)
        if self._state == _ANSWER:
            answer = self._answer(text)
        return thought, answer

    def finish(self) -> tuple[str, str]:
        """Whatever is still held: a partial tag is plain text after all."""
        held, self._held = self._held, ""
        if self._state == _THINKING:
            return held.rstrip(), ""
        if self._state == _OPENING:
            return "", held if held.strip() else ""
        return "", ""

    def _open(self, text: str) -> str:
        """Before any output: waits to see whether the model opens a think block."""
        self._held += text
        begun = self._held.lstrip()
        if not begun or (len(begun) < len(self._start) and self._start.startswith(begun)):
            return ""
        whole, self._held = self._held, ""
        if begun.startswith(self._start):
            self._state = _THINKING
            return begun[len(self._start):]
        self._state = _ANSWER
        self._answer_started = True  # no think block: the answer is kept as the model wrote it
        return whole

    def _think(self, text: str) -> tuple[str, str]:
        """Returns (thought to send, text after the end tag)."""
        buffer = self._held + text
        if not self._thought_started:
            buffer = buffer.lstrip()
            self._thought_started = bool(buffer)
        end = buffer.find(self._end)
        if end >= 0:
            self._held = ""
            self._state = _ANSWER
            return buffer[:end].rstrip(), buffer[end + len(self._end):]
        keep = len(buffer) - pending_prefix_length(buffer, [self._end])
        # Trailing whitespace waits too: if the end tag follows, it belongs to no one.
        keep = len(buffer[:keep].rstrip())
        self._held = buffer[keep:]
        return buffer[:keep], ""

    def _answer(self, text: str) -> str:
        if not self._answer_started:
            text = text.lstrip()
            self._answer_started = bool(text)
        return text
