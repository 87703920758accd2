"""Rerank with a causal LM, the way Qwen3-Reranker works: ask the model whether the document
answers the query, and score by the probability of "yes" against "no" as the next token.

Any chat LM can be used; Qwen3-Reranker checkpoints are trained for exactly this prompt."""

from __future__ import annotations

from typing import Any

from fleet.catalogue.schemas import RerankFamily
from fleet.engines.base import RerankEngine, RerankResult, checked_options, wants_remote_code
from fleet.engines.launch_options import TransformersRerankOptions

SYSTEM_PROMPT = (
    "Judge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
FEW_SHOT_QUERY = "What color is the sky on a clear day?"
FEW_SHOT = (("On a clear day the sky is blue.", "yes"), ("Tomatoes grow well in warm weather.", "no"))


class LLMRerank:
    def __init__(self, model_path: str, family: RerankFamily, device: str | None,
                 options: TransformersRerankOptions | None = None):
        options = checked_options(options, TransformersRerankOptions)
        self._model_path = model_path
        self._device = device
        self._max_tokens = options.max_tokens or family.max_tokens
        self._instruction = options.instruction or DEFAULT_INSTRUCTION
        self._trust_remote_code = wants_remote_code(family, options)
        zero_shot = options.zero_shot
        if zero_shot is None:  # the catalogue's say, for a launch that gives none
            zero_shot = bool(getattr(family, "rerank_zero_shot", False))
        self._few_shot = not zero_shot
        self._model: Any = None
        self._tokenizer: Any = None
        self._yes_ids: list[int] = []
        self._no_ids: list[int] = []

    def load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(
            self._model_path, trust_remote_code=self._trust_remote_code, padding_side="left"
        )
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        dtype = torch.float32 if self._device == "cpu" else torch.bfloat16
        self._model = AutoModelForCausalLM.from_pretrained(
            self._model_path, dtype=dtype, trust_remote_code=self._trust_remote_code
        ).to(self._device).eval()  # type: ignore[arg-type]  # see TransformersLLM.load
        self._yes_ids = self._single_token_ids(["yes", "Yes", "YES"])
        self._no_ids = self._single_token_ids(["no", "No", "NO"])
        if not self._yes_ids or not self._no_ids:
            raise ValueError("the tokenizer has no single token for 'yes'/'no'")
        self.score([("warm", "up")])

    def _single_token_ids(self, words: list[str]) -> list[int]:
        ids = []
        for word in words:
            encoded = self._tokenizer.encode(word, add_special_tokens=False)
            if len(encoded) == 1 and encoded[0] not in ids:
                ids.append(encoded[0])
        return ids

    def _turn(self, query: str, document: str) -> dict[str, str]:
        content = f"<Instruct>: {self._instruction}\n<Query>: {query}\n<Document>: {document}"
        return {"role": "user", "content": content}

    def _prompt(self, query: str, document: str) -> str:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        if self._few_shot:
            # A general chat LM has never seen this task: one worked "yes" and one "no" make its
            # yes/no logits far more telling (measured on SmolLM2-135M). Trained rerankers
            # (Qwen3-Reranker) get the zero-shot prompt they were trained on.
            for document_shown, answer in FEW_SHOT:
                messages += [self._turn(FEW_SHOT_QUERY, document_shown),
                             {"role": "assistant", "content": answer}]
        messages.append(self._turn(query, document))
        if self._tokenizer.chat_template:
            return self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
            )
        # No chat template: the same turns as plain text.
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n\n".join(lines) + "\n\nassistant:"

    def score(self, pairs: list[tuple[str, str]]) -> RerankResult:
        import torch

        prompts = [self._prompt(q, d) for q, d in pairs]
        batch = self._tokenizer(prompts, padding=True, truncation=True, max_length=self._max_tokens,
                                return_tensors="pt").to(self._device)
        with torch.inference_mode():
            # Left padding: the last position is every row's next-token prediction.
            logits = self._model(**batch).logits[:, -1, :].float()
        yes = torch.logsumexp(logits[:, self._yes_ids], dim=-1)
        no = torch.logsumexp(logits[:, self._no_ids], dim=-1)
        scores = torch.sigmoid(yes - no)  # = softmax over {yes, no}, the yes side
        counts = batch["attention_mask"].sum(dim=1).tolist()
        return RerankResult(scores=[float(s) for s in scores], token_counts=counts)

    def close(self) -> None:
        self._model = None


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[RerankEngine] = LLMRerank
