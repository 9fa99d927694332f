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

"""Bad input raises a ValueError that names the argument and what it accepts."""

import pytest
import torch

from cola_diffusers import ColaDLMPipeline, ColaTransformer1DModel
from cola_diffusers.models.transformers.transformer_cola import ColaModulationTable

from ..conftest import make_tiny_pipeline


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"prompt": []}, "`prompt` must be a string or a non-empty list"),
        ({"prompt": None}, "Pass exactly one of `prompt`, `messages` and `prompt_token_ids`"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            "Pass exactly one of `prompt`, `messages` and `prompt_token_ids`",
        ),
        ({"prompt": None, "messages": "hi"}, "`messages` must be a non-empty list"),
        ({"stop": ["ok", ""]}, "`stop` must be a non-empty string or a list of non-empty strings"),
        ({"prompt": ["fine", 3]}, r"`prompt\[1\]` must be a string"),
        ({"prompt": ""}, r"`prompt\[0\]` is empty"),
        ({"gen_length": 0}, "`gen_length` must be an integer >= 1"),
        ({"gen_length": 2.5}, "`gen_length` must be an integer >= 1"),
        ({"block_length": 0}, "`block_length` must be an integer >= 1"),
        ({"num_inference_steps": 0}, "`num_inference_steps` must be an integer >= 1"),
        ({"guidance_scale": -1.0}, "`guidance_scale` must be >= 0"),
        ({"temperature": -0.5}, "`temperature` must be >= 0"),
        ({"top_k": 0}, "`top_k` must be an integer >= 1"),
        ({"top_p": 1.5}, r"`top_p` must be in \(0, 1\]"),
        ({"repetition_penalty": 0.0}, "`repetition_penalty` must be > 0"),
        ({"output_type": "np"}, "`output_type` must be one of"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "`callback_on_step_end_tensor_inputs` has to be in"),
        ({"latents": torch.randn(1, 3, 8)}, r"`latents` must have shape \(1, 4, 8\)"),
    ],
)
def test_bad_call_arguments_raise(pipe, kwargs, message):
    arguments = {"prompt": "the river story.", "gen_length": 4, "num_inference_steps": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        pipe(**arguments)


def test_prompt_longer_than_the_model_allows(pipe):
    pipe.tokenizer.model_max_length = 12
    try:
        with pytest.raises(ValueError, match=r"`prompt\[0\]` has 30 tokens; at most 8 fit"):
            pipe("Question: What is the capital of France? Answer:", gen_length=4)
    finally:
        pipe.tokenizer.model_max_length = int(1e30)


def test_missing_pad_token_needs_an_explicit_one(pipe):
    pipe.tokenizer.pad_token = None
    try:
        with pytest.raises(ValueError, match="`pad_token_id` is required"):
            pipe("the river story.", gen_length=4)
        assert pipe("the river story.", gen_length=4, pad_token_id=2, num_inference_steps=1).sequences.shape == (1, 4)
    finally:
        pipe.tokenizer.pad_token = "<|pad|>"


def test_mismatched_vae_and_transformer_are_rejected(pipe):
    transformer = ColaTransformer1DModel(
        in_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=16, rope_dim=8
    )
    with pytest.raises(ValueError, match=r"The VAE's `latent_dim` \(8\) must equal the transformer's `in_channels`"):
        ColaDLMPipeline(transformer=transformer, vae=pipe.vae, scheduler=pipe.scheduler, tokenizer=pipe.tokenizer)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"default_num_inference_steps": 0}, "`default_num_inference_steps` must be an integer >= 1 or None"),
        ({"default_num_inference_steps": 2.0}, "`default_num_inference_steps` must be an integer >= 1 or None"),
        ({"default_guidance_scale": -0.5}, "`default_guidance_scale` must be a number >= 0 or None"),
        ({"default_guidance_scale": "7"}, "`default_guidance_scale` must be a number >= 0 or None"),
    ],
)
def test_bad_checkpoint_defaults_are_rejected(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ColaDLMPipeline(**pipe.components, **kwargs)


def test_transformer_rejects_wrong_shapes(pipe):
    transformer = pipe.transformer
    with pytest.raises(ValueError, match="`hidden_states` must have 8 channels"):
        transformer(torch.randn(1, 4, 5), torch.zeros(1))
    with pytest.raises(ValueError, match=r"`timestep` must have shape \(1,\), \(2,\) or \(2, 4\), got \(3, 4\)"):
        transformer(torch.randn(2, 4, 8), torch.zeros(3, 4))
    modulation = ColaModulationTable(torch.tensor([1000.0, 500.0]))
    # Checked on the device, without a host synchronisation: a RuntimeError on the CPU.
    with pytest.raises(RuntimeError, match="`timestep` holds a value that is not among the timesteps"):
        transformer(torch.randn(2, 4, 8), torch.full((1,), 750.0), modulation=modulation)
    with pytest.raises(ValueError, match=r"A batch of 2 rows does not fit a cache of 1 rows"):
        mask = torch.ones(1, 1, 4, 4, dtype=torch.bool)
        transformer(torch.randn(2, 4, 8), torch.zeros(1), None, mask, transformer.make_kv_cache(1, 4), torch.arange(4))


def test_vae_rejects_wrong_shapes(pipe):
    with pytest.raises(ValueError, match=r"`latents` must have shape \(batch_size, num_latents, 8\)"):
        pipe.vae.decode(torch.randn(1, 4, 3))
    with pytest.raises(ValueError, match="`input_ids` must have shape"):
        pipe.vae.encode(torch.zeros(4, dtype=torch.long))


def test_a_cached_pass_runs_with_autograd_on(pipe):
    # A caller that leaves gradients on (as outside the pipeline's no_grad) can still write the cache in place.
    transformer = pipe.transformer
    cache = transformer.make_kv_cache(2, 8)
    hidden_states = torch.randn(2, 4, 8, requires_grad=True)
    mask = torch.ones(2, 1, 4, 8, dtype=torch.bool)
    output = transformer(hidden_states, torch.zeros(1), None, mask, cache, torch.arange(4)).sample
    assert output.requires_grad and bool(output.isfinite().all())
    assert cache.keys[:, :, :4].abs().sum() > 0 and cache.keys[:, :, 4:].abs().sum() == 0
