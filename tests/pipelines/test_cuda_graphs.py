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

"""CUDA graphs of the DiT step passes: the eager path's greedy tokens, graphs reused across steps and requests."""

import pytest
import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.pipelines.cola_dlm.cuda_graphs import ColaDiTGraphs

from ..conftest import PROMPTS, REFERENCE_DIRS


GREEDY = {"gen_length": 24, "num_inference_steps": 4, "guidance_scale": 7.0, "eos_early_stop": False}


def load(fixture: str, device: str) -> ColaDLMPipeline:
    pipe = ColaDLMPipeline.from_pretrained(REFERENCE_DIRS[fixture]).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def greedy_tokens(pipe, prompts=PROMPTS) -> torch.Tensor:
    return pipe(prompts, generator=torch.Generator().manual_seed(0), **GREEDY).sequences


@pytest.mark.parametrize("fixture", ["cola_reference", "cola_reference_variants"])
def test_static_buffers_give_the_eager_tokens_and_serve_later_requests(fixture):
    # The graphs' buffers and caches, run eagerly (capture=False): everything a replay does but the capture.
    pipe = load(fixture, "cpu")
    expected = [greedy_tokens(pipe), greedy_tokens(pipe, PROMPTS[:2])]
    pipe._dit_graphs = ColaDiTGraphs(pipe.transformer, capture=False)
    assert torch.equal(greedy_tokens(pipe), expected[0])
    num_passes = len(pipe._dit_graphs.passes)
    # Another request of the same shape reuses every pass; one of another shape gets its own.
    assert torch.equal(greedy_tokens(pipe), expected[0]) and len(pipe._dit_graphs.passes) == num_passes
    assert torch.equal(greedy_tokens(pipe, PROMPTS[:2]), expected[1])
    assert len(pipe._dit_graphs.passes) > num_passes
    pipe.disable_cuda_graphs()
    assert pipe._dit_graphs is None


def test_cuda_graphs_need_a_cuda_device():
    with pytest.raises(ValueError, match="`enable_cuda_graphs` needs the transformer on a CUDA device"):
        load("cola_reference", "cpu").enable_cuda_graphs()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("fixture", ["cola_reference", "cola_reference_variants"])
def test_cuda_graphs_give_the_eager_tokens(fixture):
    pipe = load(fixture, "cuda")
    expected = [greedy_tokens(pipe), greedy_tokens(pipe, PROMPTS[:2])]
    pipe.enable_cuda_graphs()
    for _ in range(2):
        assert torch.equal(greedy_tokens(pipe), expected[0])
        assert torch.equal(greedy_tokens(pipe, PROMPTS[:2]), expected[1])
