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

"""Token sampling (`sample_tokens`) on hand-built logits: temperature, top-k, top-p, repetition penalty, generators."""

import pytest
import torch

from cola_diffusers.generation.logits import penalize_generated, sample_tokens


NUM_DRAWS = 20000


def frequencies(logits: torch.Tensor, seed: int = 0, **kwargs) -> torch.Tensor:
    """Frequencies of `NUM_DRAWS` seeded draws from one row of `logits` (shape `(vocab_size,)`)."""
    draws = sample_tokens(logits.expand(1, NUM_DRAWS, -1), generator=torch.Generator().manual_seed(seed), **kwargs)
    return torch.bincount(draws.flatten(), minlength=logits.shape[-1]) / NUM_DRAWS


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[[0.1, 2.0, -1.0], [3.0, 2.9, 0.0]], [[-5.0, -4.0, -6.0], [0.0, 0.0, 0.5]]])
    assert sample_tokens(logits).tolist() == [[1, 0], [1, 2]]


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_frequencies_match_the_softmax(temperature):
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    expected = (logits / temperature).softmax(-1)
    # One standard deviation of a frequency is at most 0.0035 here; without the division by the temperature the
    # largest deviation would be 0.27 (T = 0.5) or 0.19 (T = 2).
    deviation = (frequencies(logits, temperature=temperature) - expected).abs().max().item()
    assert deviation < 0.012, deviation


def test_top_k_never_leaves_the_k_largest():
    logits = torch.randn(4, 64, 10, generator=torch.Generator().manual_seed(0))
    draws = sample_tokens(logits, temperature=5.0, top_k=3, generator=torch.Generator().manual_seed(1))
    assert (draws[..., None] == logits.topk(3, dim=-1).indices).any(-1).all()
    # The k survivors keep their renormalised probabilities.
    row = torch.tensor([1.0, 3.0, 0.0, 2.0, 2.5])
    expected = row.exp() * torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0])
    counts = frequencies(row, temperature=1.0, top_k=3)
    assert counts[[0, 2]].eq(0).all()
    torch.testing.assert_close(counts, expected / expected.sum(), atol=0.012, rtol=0)


def test_top_p_keeps_the_smallest_nucleus_that_reaches_p():
    # Probabilities .5/.3/.15/.05, out of order: the cumulative mass .5, .8, ... first reaches .7 at the second.
    probabilities = torch.tensor([0.3, 0.05, 0.5, 0.15])
    counts = frequencies(probabilities.log(), temperature=1.0, top_p=0.7)
    assert counts[[1, 3]].eq(0).all()
    torch.testing.assert_close(counts[[2, 0]], torch.tensor([0.5, 0.3]) / 0.8, atol=0.012, rtol=0)
    assert frequencies(probabilities.log(), temperature=1.0, top_p=0.45)[2].item() == 1.0


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_once_per_token():
    # Token 0 was sampled (twice) in earlier blocks; penalty 1.5 turns 3.0 into 2.0 and -1.0 into -1.5. Greedy
    # decoding against competitors just above and below those values reads the penalised logit off the argmax.
    competitors = torch.tensor([1.99, 2.01, -1.51, -1.49])
    logits = torch.stack([torch.tensor([3.0, 3.0, -1.0, -1.0]), competitors], dim=-1)[None]
    penalised = torch.tensor([[0, 0]])
    assert sample_tokens(logits, history=penalised, repetition_penalty=1.5).tolist() == [[0, 1, 0, 1]]
    # Unchanged without history, with penalty 1, and for tokens not in the history.
    assert sample_tokens(logits, history=torch.tensor([[1]]), repetition_penalty=1.0).tolist() == [[0, 0, 0, 0]]
    assert sample_tokens(logits, repetition_penalty=1.5).tolist() == [[0, 0, 0, 0]]
    assert sample_tokens(logits, history=torch.tensor([[1, 1]]), repetition_penalty=1.5).tolist() == [[0, 0, 0, 0]]


def test_repetition_penalty_uses_each_rows_history():
    logits = torch.tensor([[[3.0, 2.5]], [[3.0, 2.5]]])
    assert sample_tokens(logits, history=torch.tensor([[0], [1]]), repetition_penalty=1.5).tolist() == [[1], [0]]


def test_per_row_generators_equal_row_by_row_sampling():
    logits = torch.randn(3, 16, 12, generator=torch.Generator().manual_seed(0))
    history = torch.randint(0, 12, (3, 5), generator=torch.Generator().manual_seed(1))
    kwargs = {"temperature": 0.9, "top_k": 8, "top_p": 0.95, "repetition_penalty": 1.3}
    seeds = (11, 12, 13)
    batch = sample_tokens(logits, history, generator=[torch.Generator().manual_seed(s) for s in seeds], **kwargs)
    for row, seed in enumerate(seeds):
        alone = sample_tokens(
            logits[row : row + 1], history[row : row + 1], generator=torch.Generator().manual_seed(seed), **kwargs
        )
        assert batch[row].tolist() == alone[0].tolist()


def test_presence_and_frequency_penalties_count_only_the_generated_tokens_of_each_row():
    logits = torch.zeros(2, 1, 6)
    # Row 0 re-emits one prompt token (5) before its generated tokens 1, 1, 3; row 1 generated 5, 5, 2, 4.
    history = torch.tensor([[5, 1, 1, 3], [5, 5, 2, 4]])
    scores = penalize_generated(logits, history, [1, 0], presence_penalty=0.5, frequency_penalty=0.25)
    assert scores[0, 0].tolist() == [0.0, -1.0, 0.0, -0.75, 0.0, 0.0]
    assert scores[1, 0].tolist() == [0.0, 0.0, -0.75, 0.0, -0.75, -1.0]


def test_negative_penalties_favour_the_generated_tokens():
    logits = torch.tensor([[[1.0, 0.9, 0.0]]])
    history = torch.tensor([[1]])
    assert sample_tokens(logits, history).tolist() == [[0]]
    assert sample_tokens(logits, history, presence_penalty=-0.2).tolist() == [[1]]
    assert sample_tokens(logits, history, frequency_penalty=-0.2).tolist() == [[1]]
    assert sample_tokens(logits, history, presence_penalty=-0.2, num_prompt_tokens=[1]).tolist() == [[0]]
