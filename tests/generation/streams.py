"""Cutting a text into deltas the way a token stream might: whole, char by char, and at random."""

from __future__ import annotations

import random
from collections.abc import Iterator


def random_chunks(text: str, rng: random.Random, longest: int = 6) -> list[str]:
    chunks, position = [], 0
    while position < len(text):
        size = rng.randint(1, longest)
        chunks.append(text[position:position + size])
        position += size
    return chunks


def chunkings(text: str, seeds: int = 25) -> Iterator[list[str]]:
    """The text whole, one char at a time, then `seeds` seeded random cuts."""
    yield [text]
    yield list(text)
    for seed in range(seeds):
        yield random_chunks(text, random.Random(seed))
