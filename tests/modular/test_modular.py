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

"""Modular Diffusers: `ColaDLMBlocks` gives the results of `ColaDLMPipeline`."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.guiders import ClassifierFreeGuidance

from cola_diffusers import ColaDLMBlocks, ColaDLMPipeline

from ..conftest import PROMPTS, make_chat_pipeline, make_tiny_pipeline, save_distilled_checkpoint


OUTPUTS = ["sequences", "texts", "latents"]


@pytest.fixture
def pipe():
    return make_tiny_pipeline(seed=3)


@pytest.fixture
def modular_pipe(pipe):
    modular_pipe = ColaDLMBlocks().init_pipeline()
    modular_pipe.update_components(
        transformer=pipe.transformer, vae=pipe.vae, scheduler=pipe.scheduler, tokenizer=pipe.tokenizer
    )
    modular_pipe.set_progress_bar_config(disable=True)
    return modular_pipe


@pytest.fixture(scope="module")
def noise():
    return torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))


def assert_same_output(pipe, modular_pipe, seed=None, **kwargs):
    def with_generator():
        return {**kwargs, "generator": None if seed is None else torch.Generator().manual_seed(seed)}

    expected = pipe(PROMPTS, output_type="latent", **with_generator())
    expected_texts = pipe(PROMPTS, **with_generator()).texts
    output = modular_pipe(prompt=PROMPTS, output=OUTPUTS, **with_generator())
    assert torch.equal(output["sequences"], expected.sequences)
    assert output["texts"] == expected_texts
    torch.testing.assert_close(output["latents"], expected.latents, rtol=1e-5, atol=1e-5)
    return output


@pytest.mark.parametrize("guidance_scale", [3.0, 1.0])
def test_modular_pipeline_matches_the_pipeline(pipe, modular_pipe, noise, guidance_scale):
    # `block_length` and `pad_token_id` are left to `ColaDLMModularPipeline`'s defaults, read from its components.
    assert_same_output(
        pipe,
        modular_pipe,
        gen_length=10,
        num_inference_steps=4,
        guidance_scale=guidance_scale,
        temperature=0.0,
        eos_early_stop=False,
        latents=noise,
    )


def test_stop_tokens_and_sampling_match_the_pipeline(pipe, modular_pipe, noise):
    kwargs = {"gen_length": 10, "num_inference_steps": 3}
    free = pipe(PROMPTS, eos_early_stop=False, latents=noise, **kwargs)
    # Every prompt stops at its second token: generation ends after the first of three blocks.
    stop_token_ids = free.sequences[:, 1].tolist()
    output = assert_same_output(pipe, modular_pipe, latents=noise, eos_token_id=stop_token_ids, **kwargs)
    assert output["latents"][:, 4:].eq(0).all()
    assert_same_output(pipe, modular_pipe, seed=5, temperature=0.8, top_k=50, **kwargs)


def test_swapped_scheduler_and_guider(pipe, modular_pipe, noise):
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=3.0)
    guider = ClassifierFreeGuidance(guidance_scale=5.0, guidance_rescale=0.7)
    modular_pipe.update_components(scheduler=scheduler, guider=guider)
    kwargs = {"gen_length": 10, "num_inference_steps": 4, "eos_early_stop": False, "latents": noise}
    output = modular_pipe(prompt=PROMPTS, output=OUTPUTS, **kwargs)
    assert torch.isfinite(output["latents"]).all()
    assert output["sequences"].shape == (3, 10)

    pipe.scheduler, pipe.guider = scheduler, guider
    assert_same_output(pipe, modular_pipe, **kwargs)


def test_init_pipeline_loads_a_saved_pipeline(pipe, noise, tmp_path):
    pipe.save_pretrained(tmp_path)
    modular_pipe = ColaDLMBlocks().init_pipeline(str(tmp_path))
    modular_pipe.load_components()
    modular_pipe.set_progress_bar_config(disable=True)
    assert modular_pipe.guider is None
    assert_same_output(pipe, modular_pipe, gen_length=10, num_inference_steps=2, eos_early_stop=False, latents=noise)


def test_init_pipeline_takes_the_sampling_defaults_of_a_saved_checkpoint(pipe, noise, tmp_path):
    modular_pipe = ColaDLMBlocks().init_pipeline(save_distilled_checkpoint(pipe, tmp_path))
    modular_pipe.load_components()
    modular_pipe.set_progress_bar_config(disable=True)
    defaults = modular_pipe.checkpoint_defaults
    assert (defaults.num_inference_steps, defaults.guidance_scale) == (1, 1.0)
    kwargs = {"gen_length": 10, "eos_early_stop": False, "latents": noise}
    # Neither argument given: the saved defaults, 1 step per block and guidance 1.
    expected = pipe(PROMPTS, output_type="latent", num_inference_steps=1, guidance_scale=1.0, **kwargs)
    output = modular_pipe(prompt=PROMPTS, output=OUTPUTS, **kwargs)
    torch.testing.assert_close(output["latents"], expected.latents, rtol=1e-5, atol=1e-5)
    # Explicit arguments win.
    expected = pipe(PROMPTS, output_type="latent", num_inference_steps=2, guidance_scale=3.0, **kwargs)
    output = modular_pipe(prompt=PROMPTS, output=OUTPUTS, num_inference_steps=2, guidance_scale=3.0, **kwargs)
    torch.testing.assert_close(output["latents"], expected.latents, rtol=1e-5, atol=1e-5)


def test_messages_render_in_the_checkpoints_chat_format(pipe, noise, tmp_path):
    chat_pipe = make_chat_pipeline(extra_tokens=["■"])
    ColaDLMPipeline(**chat_pipe.components, chat_format="text").save_pretrained(tmp_path)
    saved = ColaDLMPipeline.from_pretrained(tmp_path)
    saved.set_progress_bar_config(disable=True)
    modular_pipe = ColaDLMBlocks().init_pipeline(str(tmp_path))
    modular_pipe.load_components()
    modular_pipe.set_progress_bar_config(disable=True)
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    kwargs = {"gen_length": 10, "num_inference_steps": 3, "latents": noise[:1]}
    # The `text` format, padded with its stop token ■, which also ends the answer.
    request = saved.make_request(messages=messages, **{k: v for k, v in kwargs.items() if k != "latents"})
    stop_token_id = saved.tokenizer.convert_tokens_to_ids("■")
    assert request.chat_format == "text" and request.pad_token_id == stop_token_id
    expected = saved(messages=messages, output_type="latent", **kwargs)
    output = modular_pipe(messages=messages, output=[*OUTPUTS, "finish_reasons"], **kwargs)
    assert torch.equal(output["sequences"], expected.sequences)
    torch.testing.assert_close(output["latents"], expected.latents, rtol=1e-5, atol=1e-5)
    assert output["finish_reasons"] == expected.finish_reasons
