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

"""The running batch of continuous batching: prompts that join and leave between blocks generate what they do alone."""

import pytest
import torch

from cola_diffusers.pipelines.cola_dlm.batching import RunningBatch

from ..conftest import PROMPTS, make_tiny_pipeline


# Prompts of 30, 2 and 8 tokens (a prefix and re-emitted tokens, no prefix, whole blocks), with their own settings.
REQUESTS = [
    {"prompt": PROMPTS[0], "gen_length": 12, "guidance_scale": 3.0},
    {"prompt": PROMPTS[1], "gen_length": 5, "temperature": 0.8, "top_k": 20, "guidance_scale": 3.0},
    {"prompt": PROMPTS[2], "gen_length": 9, "temperature": 1.0, "frequency_penalty": 1.0, "guidance_scale": 1.0},
    {"prompt": PROMPTS[1], "gen_length": 14, "guidance_scale": 5.0, "repetition_penalty": 1.3},
    {"prompt": PROMPTS[2], "gen_length": 3, "temperature": 0.5, "top_p": 0.9},
]


@pytest.fixture(scope="module")
def pipe():
    pipe = make_tiny_pipeline(seed=3)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def alone(pipe, settings: dict, seed: int) -> tuple[list[int], str]:
    output = pipe(**settings, eos_early_stop=False, generator=[torch.Generator().manual_seed(seed)])
    return output.sequences[0, : output.num_tokens[0]].tolist(), output.finish_reasons[0]


def test_rows_that_join_at_different_blocks_generate_what_they_generate_alone(pipe):
    settings = REQUESTS * 2
    requests = [pipe.make_request(**request, eos_early_stop=False) for request in settings]
    # Two rows at most and a context of 42 tokens: rows wait for free rows, and the ring of slots wraps around.
    batch = RunningBatch(pipe, requests[0], max_rows=2, max_length=42)
    waiting, results, sizes = list(enumerate(requests)), {}, []
    while waiting or batch.rows:
        joining = waiting[: batch.free_rows]
        waiting = waiting[len(joining) :]
        if joining:
            generators = [torch.Generator().manual_seed(index) for index, _ in joining]
            batch.add([request for _, request in joining], generators, [index for index, _ in joining])
        sizes.append(len(batch.rows))
        for row in batch.run_block():
            results[row.owner] = (
                row.tokens[row.num_trimmed_tokens :][: len(row.completion.token_ids)].tolist(),
                row.finish_reason,
            )
    assert max(sizes) == 2 and batch.num_blocks_run * batch.settings.block_length > batch.ring.cache_length
    assert [results[index] for index in range(len(settings))] == [
        alone(pipe, request, index) for index, request in enumerate(settings)
    ]


def test_a_prompt_longer_than_the_context_is_refused_before_any_model_work(pipe):
    request = pipe.make_request(prompt=PROMPTS[0], gen_length=40)
    batch = RunningBatch(pipe, request, max_rows=2, max_length=48)
    with pytest.raises(ValueError, match="does not fit the batch's context of 48 tokens"):
        batch.add([request], [torch.Generator()], [0])
    assert batch.rows == [] and not batch.ring.valid.any()
