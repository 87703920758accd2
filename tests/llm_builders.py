"""Tiny Qwen2 chat models built on the spot, because no small chat model in Hugging Face safetensors
format can be had offline (see /work/shared/test-models.md).

- `build_tiny_qwen2`: random weights. It loads and generates through the real `transformers` code,
  so it checks plumbing (loading, chat templates, streaming, batching), never the text.
- `build_scripted_qwen2`: a "successor" model whose greedy output is fixed by a script, so tests can
  assert exact text: tool calls, reasoning blocks, stop handling, streamed chunk boundaries.

Both folders hold a byte-level BPE tokenizer trained here (every string tokenizes: unknown text
falls back to bytes), the ChatML special tokens and a Qwen2.5-style chat template with tools.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]

#: The string whose token ends a rendered generation prompt (`...<|im_start|>assistant\n`): use it as
#: the `build_scripted_qwen2` script key for what a chat request answers.
CHAT_PROMPT_END = "\n"

#: Logit margin of the scripted next token over every other token (others sit at 0): greedy picks
#: it, and even sampling at temperature 1 picks it with probability ~1 - vocab * e^-30.
SCRIPT_MARGIN = 30.0

BPE_VOCAB_SIZE = 400

# Qwen2's pre-tokenizer split (transformers' Qwen2Tokenizer). transformers 5 rebuilds the pipeline
# of a qwen2 folder's tokenizer with it whatever tokenizer.json says, so training with the same one
# keeps tokenizer.json and the loaded tokenizer in agreement.
QWEN2_SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                     r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

CORPUS = [
    "Paris is the capital and largest city of France.",
    "Berlin is the capital of Germany, and Rome is the capital of Italy.",
    "What is the weather like in Paris today? It is sunny and warm.",
    "The user asks a question and the assistant gives a helpful answer.",
    "You are a helpful assistant. Answer the question in one short sentence.",
    "Hello! How can I help you today? Thank you, that was very helpful.",
    "The quick brown fox jumps over the lazy dog.",
    "Bananas are rich in potassium and easy to carry on a long walk.",
    "Call the function with the right arguments and read the tool response.",
    "Tell me a story about a cat who lives in a small house near the river.",
    "Numbers like 1, 2, 3, 10, 42 and 100 appear in many sentences.",
    "Let me think step by step before I write the final answer.",
    "The system prompt sets the rules; the user message asks for something.",
    "Water boils at 100 degrees and freezes at 0 degrees.",
]

# Qwen2.5's template, minus its default "You are Qwen" system prompt, plus two tolerances that
# OpenAI-style messages need: `content` may be None or a list of text parts, and tool-call
# `arguments` may already be a JSON string (OpenAI's wire form) instead of a dict.
CHAT_TEMPLATE = """\
{%- macro render(content) -%}
    {%- if content is string -%}{{- content -}}
    {%- elif content is iterable and content is not mapping -%}
        {%- for part in content -%}{%- if part.type == 'text' -%}{{- part.text -}}{%- endif -%}{%- endfor -%}
    {%- elif content is not none -%}{{- content -}}
    {%- endif -%}
{%- endmacro -%}
{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- render(messages[0].content) + '\\n\\n' }}
    {%- endif %}
    {{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
        'within <tool_call></tool_call> XML tags:\\n<tool_call>\\n'
        '{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}
{%- elif messages[0].role == 'system' %}
    {{- '<|im_start|>system\\n' + render(messages[0].content) + '<|im_end|>\\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'user' or (message.role == 'system' and not loop.first)
          or (message.role == 'assistant' and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + render(message.content) + '<|im_end|>\\n' }}
    {%- elif message.role == 'assistant' %}
        {{- '<|im_start|>assistant' }}
        {%- if message.content %}
            {{- '\\n' + render(message.content) }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}
            {%- if tool_call.arguments is string %}
                {{- tool_call.arguments }}
            {%- else %}
                {{- tool_call.arguments | tojson }}
            {%- endif %}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' + render(message.content) + '\\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def build_tiny_qwen2(path: Path) -> Path:
    """A random-weight Qwen2ForCausalLM (hidden 64, 2 layers) with a ChatML tokenizer at `path`.

    Its output is noise; it exists so that serving code runs the real transformers loading and
    generation paths in a second. `path` must not exist yet (or be an empty folder)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _chat_tokenizer([])
    config = _qwen2_config(tokenizer, Qwen2Config, hidden_size=64, intermediate_size=128)
    with _seeded(torch):
        model = Qwen2ForCausalLM(config)
    return _save(path, model, tokenizer)


def build_scripted_qwen2(path: Path, script: Mapping[str, Sequence[str]]) -> Path:
    """A Qwen2ForCausalLM at `path` whose greedy continuation is fixed by `script`.

    `script` maps a start string to the chunks that follow it: `{"\\n": ["<think>", "Hi", "</think>"]}`
    makes the token "\\n" predict "<think>", "<think>" predict "Hi", and so on. A token without a
    scripted successor predicts `<|im_end|>` (the eos), so every chain stops after its last chunk.
    A chat prompt ends with the token of `CHAT_PROMPT_END` ("\\n"); a raw completion prompt ends with
    whatever key its text ends with. Every key and chunk becomes exactly one token (an added,
    non-special token unless it is one of the ChatML special tokens), so a prompt ending in a key
    ends in that token, and each chunk streams and decodes verbatim. Chunks also split ordinary text
    wherever they occur in it; pick keys and chunks that are not common words unless that is wanted.

    How: o_proj and down_proj are zero, so attention and MLP add nothing and the last hidden state
    is the embedding of the current token; embeddings are one-hot (hidden size >= vocabulary), the
    final RMSNorm turns a one-hot into sqrt(hidden) times it, and lm_head maps that to a logit of
    SCRIPT_MARGIN at the successor and 0 elsewhere. Positions and earlier tokens play no part.

    Raises ValueError when a string is empty or would need two different successors (a chunk used
    twice, or a chain's last chunk used as a key: chains do not chain)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    edges = _script_edges(script)
    strings = list(dict.fromkeys(s for edge in edges for s in edge))
    tokenizer = _chat_tokenizer([s for s in strings if s not in SPECIAL_TOKENS])
    vocab = len(tokenizer)
    hidden = -(-vocab // 32) * 32  # round up: 4 heads of an even head size
    config = _qwen2_config(tokenizer, Qwen2Config, hidden_size=hidden, intermediate_size=32)
    with _seeded(torch):
        model = Qwen2ForCausalLM(config)
    successor = torch.full((vocab,), tokenizer.convert_tokens_to_ids(IM_END), dtype=torch.long)
    for before, after in edges:
        successor[_single_id(tokenizer, before)] = _single_id(tokenizer, after)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
        model.model.norm.weight.fill_(1.0)
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
        lm_head = torch.zeros(vocab, hidden)
        lm_head[successor, torch.arange(vocab)] = SCRIPT_MARGIN / hidden**0.5
        model.lm_head.weight.copy_(lm_head)
    return _save(path, model, tokenizer)


def _script_edges(script: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """The (token, next token) pairs the script asks for, each chain closed by <|im_end|>.

    Closing every chain makes a chunk that ends one chain and continues another a conflict, so a
    chain never runs on into another one's text: each string has exactly one successor."""
    edges: dict[str, str] = {}
    for key, chunks in script.items():
        chain = [key, *chunks]
        if not all(isinstance(s, str) and s for s in chain):
            raise ValueError(f"script chunks must be non-empty strings: {chain!r}")
        if chain[-1] != IM_END:
            chain.append(IM_END)
        for before, after in pairwise(chain):
            if edges.setdefault(before, after) != after:
                raise ValueError(f"{before!r} would be followed by both {edges[before]!r} and {after!r}; "
                                 "script chunks must be distinct across the script")
    return list(edges.items())


def _single_id(tokenizer: PreTrainedTokenizerFast, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:  # cannot happen for added tokens; guards against tokenizer surprises
        raise ValueError(f"{text!r} is not a single token: {ids}")
    return ids[0]


def _chat_tokenizer(extra_tokens: list[str]) -> PreTrainedTokenizerFast:
    """The byte-level BPE trained on CORPUS, with ChatML specials, `extra_tokens` as one token each,
    and the chat template; saved and reloaded like Qwen2's (no BOS, eos <|im_end|>)."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(CORPUS, trainer)
    # Not normalized, not special: a chunk is matched verbatim in text and decoded verbatim, and
    # skip_special_tokens keeps it (a real model's <tool_call> and <think> are added the same way).
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=END_OF_TEXT, unk_token=None,
        model_max_length=512, clean_up_tokenization_spaces=False, chat_template=CHAT_TEMPLATE,
    )


def _qwen2_config(tokenizer: PreTrainedTokenizerFast, config_class: Any, hidden_size: int,
                  intermediate_size: int) -> Any:
    return config_class(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
    )


@contextmanager
def _seeded(torch: Any) -> Iterator[None]:
    """torch.manual_seed(0) for the weights, without changing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


def _save(path: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> Path:
    """save_pretrained into a temporary sibling, then rename: a half-written folder never looks like
    a model. generation_config.json gets eos <|im_end|> so plain `generate` stops at the turn end."""
    from transformers import GenerationConfig

    eos, pad = tokenizer.convert_tokens_to_ids(IM_END), tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    model.generation_config = GenerationConfig(bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    path = Path(path)
    partial = path.parent / f".partial-{path.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.rename(path)  # fails if `path` is a non-empty folder: never overwrite a model
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path
