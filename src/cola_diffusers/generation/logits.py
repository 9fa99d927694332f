# Copyright 2026 The cola-diffusers Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""
Token sampling from the Text VAE decoder's logits, with transformers' logits processors where their formulas are
the official sampler's: repetition penalty, temperature and top-k. Top-p keeps the official rule (a token stays
while the probability above it is at most `top_p`), which transformers' `TopPLogitsWarper` words differently.
Presence and frequency penalties are OpenAI's and vLLM's, over the tokens generated so far.
"""

from dataclasses import dataclass

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
)

from .inputs import DEFAULTS, check_token_sampling_inputs


def filter_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Sets the scores outside the smallest set of most likely tokens whose probability exceeds `top_p` to `-inf`."""
    sorted_scores, sorted_index = torch.sort(scores, descending=True, dim=-1)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative > top_p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 0] = False
    remove = remove_sorted.scatter(-1, sorted_index, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def penalize_generated(
    scores: torch.Tensor,
    history: torch.LongTensor,
    num_prompt_tokens: list[int] | None,
    presence_penalty: float,
    frequency_penalty: float,
) -> torch.Tensor:
    """
    Subtracts `frequency_penalty` times the count of every token among the generated tokens of its row, and
    `presence_penalty` once for every token among them (vLLM's definitions), from `scores` `(batch_size,
    num_tokens, vocab_size)`. A row's generated tokens are its `history` but the first `num_prompt_tokens[row]`.
    """
    positions = torch.arange(history.shape[1], device=history.device)
    generated = positions >= history.new_tensor(num_prompt_tokens or [0] * history.shape[0])[:, None]
    counts = scores.new_zeros(scores.shape[0], scores.shape[-1]).scatter_add_(1, history, generated.to(scores.dtype))
    penalty = frequency_penalty * counts + presence_penalty * (counts > 0).to(scores.dtype)
    return scores - penalty[:, None, :]


def sample_tokens(
    logits: torch.Tensor,
    history: torch.LongTensor | None = None,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    num_prompt_tokens: list[int] | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> torch.LongTensor:
    """
    Samples one token per position: repetition penalty, presence and frequency penalties, then temperature, top-k
    and top-p, then a draw.

    Args:
        logits (`torch.Tensor` of shape `(batch_size, num_tokens, vocab_size)`): Decoder logits of one block.
        history (`torch.LongTensor` of shape `(batch_size, history_length)`, *optional*): Tokens to penalise.
        temperature (`float`, defaults to 0.0): 0 picks the most likely token.
        top_k (`int`, *optional*), top_p (`float`, *optional*): Filters applied when `temperature > 0`.
        repetition_penalty (`float`, defaults to 1.0): Penalty of `history` tokens: positive logits are divided by
            it, negative ones multiplied.
        presence_penalty (`float`, defaults to 0.0), frequency_penalty (`float`, defaults to 0.0): Penalties of the
            generated tokens of `history` (see [`penalize_generated`]).
        num_prompt_tokens (`list[int]`, *optional*): Per row, the prompt tokens `history` starts with (those the
            first block re-emits), which presence and frequency penalties leave out.
        generator (`torch.Generator` or `list[torch.Generator]`, *optional*): One generator, or one per row.

    Returns:
        `torch.LongTensor` of shape `(batch_size, num_tokens)`.
    """
    batch_size, num_tokens, vocab_size = logits.shape
    history = history if history is not None and history.shape[1] > 0 else None
    logits = logits.float()
    if history is not None and (presence_penalty or frequency_penalty):
        logits = penalize_generated(logits, history, num_prompt_tokens, presence_penalty, frequency_penalty)
    # transformers' processors take one row of scores per position, with that row's history.
    scores = logits.flatten(0, 1)
    processors = LogitsProcessorList()
    if history is not None and repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature > 0:
        processors.append(TemperatureLogitsWarper(temperature))
        if top_k is not None and top_k < vocab_size:
            processors.append(TopKLogitsWarper(top_k))
    if processors:
        history = history.repeat_interleave(num_tokens, dim=0) if history is not None else scores.new_empty(0, 0)
        scores = processors(history.long(), scores)
    if temperature == 0:
        return scores.argmax(dim=-1).view(batch_size, num_tokens)
    if top_p is not None and top_p < 1.0:
        scores = filter_top_p(scores, top_p)

    probs = scores.softmax(dim=-1).view(batch_size, num_tokens, vocab_size)
    if isinstance(generator, list):
        rows = [torch.multinomial(row, 1, generator=g).squeeze(-1) for row, g in zip(probs, generator)]
        return torch.stack(rows)
    return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(batch_size, num_tokens)


@dataclass(frozen=True)
class TokenSampling:
    """How the tokens of every block are drawn from the decoder's logits (see [`sample_tokens`]); checked on creation."""

    temperature: float = DEFAULTS.temperature
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = DEFAULTS.repetition_penalty
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self):
        check_token_sampling_inputs(
            self.temperature,
            self.top_k,
            self.top_p,
            self.repetition_penalty,
            self.presence_penalty,
            self.frequency_penalty,
        )

    def __call__(
        self,
        logits: torch.Tensor,
        history: torch.LongTensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_prompt_tokens: list[int] | None = None,
    ) -> torch.LongTensor:
        """
        The tokens of one block's `logits`, earlier tokens `history` penalised; `history` starts with
        `num_prompt_tokens` re-emitted prompt tokens per row.
        """
        return sample_tokens(
            logits,
            history,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            num_prompt_tokens=num_prompt_tokens,
            generator=generator,
        )
