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

"""torch.compile of the repeated DiT blocks: same output, and no recompilation from block to block."""

import pytest
import torch
from torch._dynamo.utils import counters

from cola_diffusers import ColaDLMPipeline

from ..conftest import MID_TRANSFORMER, PROMPTS, REFERENCE_DIRS, make_mid_pipeline, make_tiny_pipeline, prompt_of


# Tracing with dynamo takes seconds.
pytestmark = pytest.mark.slow


def test_compiled_repeated_blocks_do_not_recompile_per_block():
    compiled, eager = make_tiny_pipeline(), make_tiny_pipeline()
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    compiled.transformer.compile_repeated_blocks(fullgraph=True, backend=recording_backend)
    noise = torch.randn(3, 24, 8, generator=torch.Generator().manual_seed(0))
    kwargs = {"gen_length": 20, "num_inference_steps": 3, "latents": noise, "eos_early_stop": False}
    result = compiled(PROMPTS, output_type="latent", **kwargs)
    graphs_for_six_blocks = len(graphs)
    compiled(PROMPTS, output_type="latent", **kwargs)

    # One graph per kind of pass (prefill, first-block step with per-position timesteps, later steps, commit) and
    # their dynamic-shape retraces; far fewer than the 36 block calls of 6 blocks x 2 layers x 3 passes.
    assert graphs_for_six_blocks <= 8
    assert len(graphs) == graphs_for_six_blocks
    torch.testing.assert_close(result.latents, eager(PROMPTS, output_type="latent", **kwargs).latents)


# Batch sizes 1-8 and prompt lengths 20-70: every request a shape of its own.
REQUESTS = [(1, 20), (4, 37), (2, 70), (8, 45), (3, 64), (5, 22), (6, 51), (7, 33)]
GREEDY = {"gen_length": 32, "num_inference_steps": 4, "guidance_scale": 7.0, "eos_early_stop": False}


def compiled_and_eager_tokens(compiled, eager, requests, offset=0):
    """Greedy tokens of the compiled and eager pipelines for every request, and dynamo's graph count after each."""
    results = []
    for batch_size, length in requests:
        prompt_token_ids = [prompt_of(eager, length - row % 3, offset=offset + row) for row in range(batch_size)]
        outputs = [
            pipe(prompt_token_ids=prompt_token_ids, generator=torch.Generator().manual_seed(0), **GREEDY).sequences
            for pipe in (compiled, eager)
        ]
        results.append((*outputs, counters["stats"]["unique_graphs"]))
    return results


@pytest.mark.parametrize("whole_model", [False, True], ids=["repeated-blocks-inductor", "whole-model"])
def test_compile_holds_on_every_request_shape(whole_model):
    torch._dynamo.reset()
    counters.clear()
    # The whole model traces every layer of every pass again (dynamo without a backend's build): two layers and half
    # the requests show it holds.
    num_layers = 2 if whole_model else MID_TRANSFORMER["num_layers"]
    compiled, eager = (make_mid_pipeline(num_layers=num_layers) for _ in range(2))
    if whole_model:
        compiled.transformer = torch.compile(compiled.transformer, backend="eager")
    else:
        compiled.transformer.compile_repeated_blocks(fullgraph=True)
    results = compiled_and_eager_tokens(compiled, eager, REQUESTS[:4] if whole_model else REQUESTS)
    for compiled_tokens, eager_tokens, _ in results:
        assert torch.equal(compiled_tokens, eager_tokens)
    # The first request compiles its passes at batch 1, the second at any batch: later shapes compile nothing new.
    graphs = [count for _, _, count in results]
    assert graphs[1] == graphs[-1]


@pytest.mark.parametrize("fixture", ["cola_reference", "cola_reference_variants"])
def test_compiled_repeated_blocks_hold_on_the_official_fixtures(fixture):
    torch._dynamo.reset()
    counters.clear()
    compiled, eager = (ColaDLMPipeline.from_pretrained(REFERENCE_DIRS[fixture]) for _ in range(2))
    compiled.set_progress_bar_config(disable=True)
    eager.set_progress_bar_config(disable=True)
    # Dynamo's graphs of each official option, run eagerly (the mid model's test covers AOT autograd and inductor).
    compiled.transformer.compile_repeated_blocks(fullgraph=True, backend="eager")
    results = compiled_and_eager_tokens(compiled, eager, [(1, 20), (3, 37), (2, 26)])
    for compiled_tokens, eager_tokens, _ in results:
        assert torch.equal(compiled_tokens, eager_tokens)
    assert results[1][2] == results[-1][2]
