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

from ..conftest import PROMPTS, make_tiny_pipeline


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
