"""An OpenAI request's generation settings -> SamplingParams, checked against the model's
context and vocabulary (the API has already checked types and ranges)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fleet.errors import BadRequest
from fleet.generation.params import SamplingParams
from fleet.limits import exceeded, limits
from fleet.messages import GenerationCall


def stop_token_ids(tokenizer: Any, eos_ids: tuple[int, ...], family_stops: list[str],
                   family_stop_ids: list[int]) -> tuple[int, ...]:
    """End-of-turn ids: the model's eos, and the family's stop strings that are single tokens
    of this tokenizer. Catalogue ids are kept only where this tokenizer agrees on what they
    are, so a custom model that borrows a family's formatting cannot stop on a wrong id."""
    ids = set(eos_ids)
    vocab = tokenizer.get_vocab()
    for text in family_stops:
        if text in vocab:
            ids.add(int(vocab[text]))
    for token_id in family_stop_ids:
        if tokenizer.convert_ids_to_tokens(int(token_id)) in family_stops:
            ids.add(int(token_id))
    return tuple(sorted(ids))


def family_text_stops(encode: Callable[[str], list[int]], family_stops: list[str],
                      stop_ids: tuple[int, ...]) -> tuple[str, ...]:
    """The family's stop strings that are matched on the answer's text: all but those that are
    one token which the sequence already stops on by id (a built-in family's end-of-turn
    tokens), so that only stops that need it cost text matching. A stop of several tokens
    ("USER:", Xinference's prompt styles) can only end an answer this way."""
    return tuple(stop for stop in family_stops
                 if stop and not (len(ids := encode(stop)) == 1 and ids[0] in stop_ids))


def _stop_strings(stop: str | list[str] | None, family_stops: tuple[str, ...]) -> tuple[str, ...]:
    items = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    return tuple(dict.fromkeys(s for s in (*items, *family_stops) if s))


def max_new_tokens(call: GenerationCall, prompt_tokens: int, context_length: int) -> int:
    room = context_length - prompt_tokens
    if room <= 0:
        raise BadRequest(
            f"the prompt has {prompt_tokens} tokens, which fills this model's context of "
            f"{context_length} tokens; shorten it", code="context_length_exceeded")
    wanted = call.max_completion_tokens or call.max_tokens
    if wanted is None:
        return room
    if wanted > room:
        raise BadRequest(
            f"max_tokens={wanted} plus the prompt's {prompt_tokens} tokens exceeds this model's "
            f"context of {context_length} tokens; ask for at most {room}",
            code="context_length_exceeded")
    return int(wanted)


# No tokenizer packs more characters into one token than this: the longest seen is 64 (a run of
# spaces or '=' in SmolLM2's vocabulary). A request whose text is longer than this many
# characters per token of the model's context cannot fit it, and is refused before it is
# rendered and tokenized: tokenizing 9 M characters took a core 8 s here.
MAX_CHARS_PER_TOKEN = 128


def check_text_size(call: GenerationCall, context_length: int) -> None:
    """Refuse a request whose strings (messages, prompt, tools...) hold more characters than
    any tokenizer could fit into the model's context. Counts stop at the limit."""
    limit = context_length * MAX_CHARS_PER_TOKEN
    chars = 0
    stack: list[Any] = [getattr(call, name) for name in call.__struct_fields__]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            chars += len(value)
            if chars > limit:
                raise BadRequest(
                    f"the request's text has more than {limit} characters, more than this "
                    f"model's context of {context_length} tokens can hold; shorten it",
                    code="context_length_exceeded")
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def check_queued_tokens(n: int, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
    """A request queues n x (prompt + max_tokens) tokens of work and, on engines that give each
    sequence its own cache, of memory: refused past the server's max_request_tokens, though one
    sequence as long as the context is always allowed."""
    queued = n * (prompt_tokens + max_tokens)
    allowed = max(limits().max_request_tokens, context_length)
    if queued > allowed:
        raise exceeded("max_request_tokens",
                       f"n={n} x (a prompt of {prompt_tokens} tokens + max_tokens {max_tokens}) "
                       f"= {queued} tokens", "too_many_tokens", value=allowed,
                       advice="ask for fewer choices (n) or fewer tokens (max_tokens)")


def _logit_bias(call: GenerationCall, vocab_size: int) -> dict[int, float]:
    bias = {}
    for key, value in (call.logit_bias or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            raise BadRequest(f"logit_bias keys must be token ids, got {key!r}") from None
        if not 0 <= token_id < vocab_size:
            raise BadRequest(f"logit_bias token id {token_id} is outside the vocabulary "
                             f"(0..{vocab_size - 1})")
        bias[token_id] = float(value)
    return bias


def sampling_params(call: GenerationCall, prompt_tokens: int, context_length: int,
                    stop_ids: tuple[int, ...], vocab_size: int,
                    grammar: str | None = None,
                    family_stops: tuple[str, ...] = ()) -> SamplingParams:
    """Chat and completion spell logprobs differently (`call.kind`). `grammar` is the
    checked grammar the output must follow (fleet.generation.grammar), if any; `family_stops`
    the model family's stop strings, which apply beside the request's own."""
    if call.kind == "chat":
        want_logprobs = bool(call.logprobs)
        top = int(call.top_logprobs or 0)
        if top and not want_logprobs:
            raise BadRequest("top_logprobs needs logprobs=true")
    else:
        count = call.logprobs
        want_logprobs, top = count is not None, int(count or 0)
    temperature, top_p, top_k = call.temperature, call.top_p, call.top_k
    max_tokens = max_new_tokens(call, prompt_tokens, context_length)
    check_queued_tokens(call.n, prompt_tokens, max_tokens, context_length)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=0 if top_k is None or top_k < 0 else int(top_k),
        seed=call.seed,
        presence_penalty=float(call.presence_penalty or 0.0),
        frequency_penalty=float(call.frequency_penalty or 0.0),
        repetition_penalty=float(call.repetition_penalty or 1.0),
        logit_bias=_logit_bias(call, vocab_size),
        logprobs=want_logprobs,
        top_logprobs=top,
        stop_token_ids=tuple(sorted({*stop_ids, *(call.stop_token_ids or ())})),
        stop=_stop_strings(call.stop, family_stops),
        grammar=grammar,
    )
