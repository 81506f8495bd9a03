"""LanguageFusion (seed component 6): put the stitched vision tokens into a chat prompt.

The user turn is ``"<|vision|>\\n{query}"`` (the seed; ``vision_placement="before-query"``) or
``"{query}\\n<|vision|>"`` (``"after-query"``) formatted with the tokenizer's chat template
(generation prompt included); the one ``<|vision|>`` id is expanded to T placeholder
positions whose embeddings are replaced by the vision tokens (seed order shown)::

    ids     [im_start user \\n] [<|vision|> x T] [\\n query im_end \\n im_start assistant \\n] [answer] [eos]
    labels  [-100 ...........................................................................] [answer] [eos]

Only answer tokens (and the end-of-turn token) carry the loss. Training batches are
right-padded, generation batches left-padded; ``attention_mask`` marks real tokens.
``max_text_tokens`` bounds the text part (prompt + answer): a long answer is cut at its
end (counted in ``FusedBatch.truncated``), but a prompt that leaves no room for a single
answer token is an error, never an empty label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cora_kit.errors import ConfigError, DataError

IGNORE_INDEX = -100
#: where the vision tokens go in the user turn (``model.llm.vision_placement``)
VISION_PLACEMENTS = ("before-query", "after-query")


@dataclass
class FusedBatch:
    """``inputs_embeds`` ``[B,L,D]``, ``attention_mask`` ``[B,L]`` (long), ``labels``
    ``[B,L]`` (None for generation), ``truncated``: answers cut to fit ``max_text_tokens``."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor | None
    truncated: int = 0


class LanguageFusion:
    """Tokenises chat prompts and splices vision tokens into the embedding sequence."""

    def __init__(
        self,
        tokenizer: Any,
        vision_token: str = "<|vision|>",
        max_text_tokens: int = 64,
        vision_placement: str = "before-query",
    ) -> None:
        if vision_placement not in VISION_PLACEMENTS:
            raise ConfigError(
                f"vision_placement must be one of {', '.join(VISION_PLACEMENTS)}; got {vision_placement!r}"
            )
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', tokenizer)!r} has no chat template;"
                " LanguageFusion formats prompts with it (use an instruct/chat tokenizer)"
            )
        vid = tokenizer.convert_tokens_to_ids(vision_token)
        if vid is None or vid == tokenizer.unk_token_id:
            raise ConfigError(f"tokenizer has no {vision_token} token; the LLM adapter must add it")
        if tokenizer.eos_token_id is None:
            raise ConfigError("tokenizer has no eos token to end answers")
        self.tokenizer = tokenizer
        self.vision_token = vision_token
        self.vision_id = int(vid)
        self.end_id = int(tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_id)
        self.max_text_tokens = max_text_tokens
        self.vision_placement = vision_placement
        self._prompt_cache: dict[str, list[int]] = {}

    def prompt_text(self, query: str) -> str:
        """The chat-formatted prompt (with one ``<|vision|>``), ready for the answer."""
        if self.vision_placement == "after-query":
            content = f"{query}\n{self.vision_token}"
        else:
            content = f"{self.vision_token}\n{query}"
        messages = [{"role": "user", "content": content}]
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def prompt_ids(self, query: str) -> list[int]:
        """Token ids of ``prompt_text(query)``; exactly one of them is ``<|vision|>``."""
        ids = self._prompt_cache.get(query)
        if ids is None:
            ids = list(self.tokenizer(self.prompt_text(query), add_special_tokens=False)["input_ids"])
            if ids.count(self.vision_id) != 1:
                raise DataError(
                    f"query {query!r} must not contain {self.vision_token}: the prompt has"
                    f" {ids.count(self.vision_id)} vision markers, expected 1"
                )
            if len(self._prompt_cache) < 65536:
                self._prompt_cache[query] = ids
        return ids

    def _text(self, i: int, query: str, answer: str | None) -> tuple[list[int], int, bool]:
        """(ids with one vision marker, number of answer ids, truncated?) of sample ``i``."""
        prompt = self.prompt_ids(query)
        room = self.max_text_tokens - (len(prompt) - 1)
        if answer is None:
            if room < 0:
                raise DataError(
                    f"sample {i}: prompt has {len(prompt) - 1} text tokens > max_text_tokens={self.max_text_tokens}"
                )
            return prompt, 0, False
        if room < 1:
            raise DataError(
                f"sample {i}: the prompt takes {len(prompt) - 1} of max_text_tokens={self.max_text_tokens} text"
                " tokens and leaves no room for the answer; raise model.llm.max_text_tokens or shorten the query"
            )
        answer_ids = list(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) + [self.end_id]
        truncated = len(answer_ids) > room
        return prompt + answer_ids[:room], min(room, len(answer_ids)), truncated

    def __call__(
        self,
        vision: torch.Tensor,
        queries: Sequence[str],
        embed: Callable[[torch.Tensor], torch.Tensor],
        answers: Sequence[str] | None = None,
    ) -> FusedBatch:
        """``vision`` ``[B,T,D]`` + B queries (+ B answers for training) -> ``FusedBatch``.

        ``embed`` maps ids ``[B,L]`` to embeddings ``[B,L,D]`` (the LLM's input table).
        """
        if vision.dim() != 3:
            raise ValueError(f"fusion expects vision tokens [B,T,D]; got {list(vision.shape)}")
        B, T, _ = vision.shape
        if len(queries) != B or (answers is not None and len(answers) != B):
            raise ValueError(
                f"fusion got {B} vision sequences, {len(queries)} queries"
                + ("" if answers is None else f" and {len(answers)} answers")
            )
        rows, n_answer, truncated = [], [], 0
        for i, q in enumerate(queries):
            ids, n_ans, cut = self._text(i, q, None if answers is None else answers[i])
            k = ids.index(self.vision_id)
            rows.append(ids[:k] + [self.vision_id] * T + ids[k + 1 :])
            n_answer.append(n_ans)
            truncated += int(cut)
        L = max(len(r) for r in rows)
        left = answers is None  # generation: left padding, so every prompt ends at L-1
        ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, L), dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long) if not left else None
        for i, r in enumerate(rows):
            start = L - len(r) if left else 0
            ids[i, start : start + len(r)] = torch.tensor(r)
            mask[i, start : start + len(r)] = 1
            if labels is not None and n_answer[i]:
                labels[i, len(r) - n_answer[i] : len(r)] = ids[i, len(r) - n_answer[i] : len(r)]
        device = vision.device
        ids, mask = ids.to(device), mask.to(device)
        embeds = embed(ids)
        slots = (ids == self.vision_id) & mask.bool()
        embeds = embeds.masked_scatter(slots.unsqueeze(-1), vision.to(embeds.dtype))
        return FusedBatch(
            inputs_embeds=embeds,
            attention_mask=mask,
            labels=None if labels is None else labels.to(device),
            truncated=truncated,
        )
