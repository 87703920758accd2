"""Token ids -> text deltas, one token at a time, for streaming.

Decoding one token alone is wrong in two ways: SentencePiece and byte-level BPE tokenizers decide a
token's leading space from its neighbours, and one character (emoji, CJK) may be split over several
byte tokens. So each new token is decoded together with the tokens of the previous delta, and only
the text it adds is sent; text that ends in half a character (U+FFFD) waits for the rest.
Only that short window is decoded, never the whole sequence, so a token costs the same at any
length.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"  # what decoding yields for an incomplete UTF-8 sequence


class TokenDecoder(Protocol):
    """What is read of a tokenizer (a Hugging Face one) to stream text: ids back to text."""

    def decode(self, token_ids: list[int], skip_special_tokens: bool = False) -> str: ...


class IncrementalDetokenizer:
    """Streams the text of generated tokens; `add` per token, `flush` at the end.

    All of `add`'s results followed by `flush()` equal `tokenizer.decode(ids, skip_special_tokens=True)`
    whenever the tokens decode to valid UTF-8 (see the module tests for the invalid-bytes caveat).
    """

    # A valid character spans at most 4 byte tokens (special tokens may come between them); past
    # this many tokens held, the text really ends in invalid bytes (a model may sample them) and is
    # sent as it decodes, so that the decoded window stays bounded.
    MAX_HELD_TOKENS = 16

    def __init__(self, tokenizer: TokenDecoder):
        self._tokenizer = tokenizer
        self._ids: list[int] = []  # the previous delta's tokens (context), then the held ones
        self._context = 0  # how many of self._ids are context, decoded only for spacing
        self._shown = 0  # how much of the held tokens' text was already sent

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def _held_text(self) -> str:
        """The text the held tokens add after the context."""
        context = self._decode(self._ids[:self._context])
        text = self._decode(self._ids)
        return text[len(context):] if len(text) > len(context) else ""

    def _advance(self) -> None:
        """The held tokens become the context of the next ones; older tokens are dropped."""
        self._ids = self._ids[self._context:]
        self._context, self._shown = len(self._ids), 0

    def add(self, token_id: int) -> str:
        self._ids.append(token_id)
        text = self._held_text()
        if text.endswith(REPLACEMENT) and len(self._ids) - self._context < self.MAX_HELD_TOKENS:
            # Send what comes before the unfinished character; keep the tokens for its rest.
            complete = len(text.rstrip(REPLACEMENT))
            delta = text[self._shown:complete]
            self._shown = max(self._shown, complete)
            return delta
        delta = text[self._shown:]
        if text:  # a special token adds no text: it stays held, the window stays put
            self._advance()
        return delta

    def flush(self) -> str:
        """The text still held back (an unfinished character decodes as U+FFFD, as in `decode`)."""
        delta = self._held_text()[self._shown:]
        self._advance()
        return delta
