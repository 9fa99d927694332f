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

"""End-to-end parity of ColaDLMPipeline with the official sampler, on both reference fixtures."""

import pytest
import torch

from cola_diffusers import ColaDLMPipeline

from ..conftest import make_tiny_pipeline, relative_error
from ..reference_sampler import reference_generate


LATENT_TOLERANCE = 1e-4


def run_recorded(pipe, run, run_index, traces):
    num_blocks, block_length = run["num_blocks"], pipe.transformer.config.block_size
    noise = torch.cat([traces[f"run{run_index}.noise.block{b}"] for b in range(num_blocks)], dim=1)
    kwargs = run["kwargs"]
    gen_length = num_blocks * block_length - max(run["first_block_prompt_tokens"])
    output = pipe(
        run["prompts"],
        gen_length=gen_length,
        num_inference_steps=kwargs["timestep_num"],
        guidance_scale=kwargs["guidance_scale"],
        repetition_penalty=kwargs.get("repetition_penalty", 1.1),
        temperature=0.0,
        latents=noise,
        eos_early_stop=False,
        output_type="latent",
    )
    expected_latents = torch.cat([traces[f"run{run_index}.latents.block{b}"] for b in range(num_blocks)], dim=1)
    assert output.latents.shape == expected_latents.shape
    assert relative_error(output.latents, expected_latents) < LATENT_TOLERANCE
    expected_tokens = [ids[:gen_length] for ids in run["generated_token_ids"]]
    assert output.sequences.tolist() == expected_tokens


@pytest.fixture(scope="module")
def reference_pipeline(reference):
    pipe = ColaDLMPipeline.from_pretrained(reference.folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_prompt_tokenization_matches_reference(reference_pipeline, reference):
    run = reference.runs[0]
    assert reference_pipeline.tokenizer(run["prompts"])["input_ids"] == run["prompt_token_ids"]
    assert reference_pipeline.pad_token_id == 2
    assert reference_pipeline.stop_token_ids == [0, 1]


def test_pipeline_reproduces_recorded_runs(reference_pipeline, reference):
    for run_index, run in enumerate(reference.runs):
        run_recorded(reference_pipeline, run, run_index, reference.traces)


def test_round_trip_through_diffusers_format(reference_pipeline, reference, tmp_path):
    reference_pipeline.save_pretrained(tmp_path)
    reloaded = ColaDLMPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.vae.config.bias == reference_pipeline.vae.config.bias
    for run_index, run in enumerate(reference.runs):
        run_recorded(reloaded, run, run_index, reference.traces)


CONFIGURATIONS = {
    "block2": ({"block_size": 2}, {}),
    "block8_wide_heads": ({"block_size": 8, "num_attention_heads": 4, "attention_head_dim": 8, "rope_dim": 4}, {}),
    "block1": ({"block_size": 1}, {}),
    "pre_norm_vae": ({}, {"post_norm": False, "norm_affine": False, "qk_norm_affine": False}),
    "biases_no_qk_norm": ({"qkv_bias": True, "mlp_ratio": 3.0}, {"qkv_bias": True, "qk_norm": False}),
    "vae_patch2": ({}, {"patch_size": 2}),
}
PROMPTS = [
    "Question: What is the capital of France? Answer:",  # 30 tokens: partial last block
    "the",  # shorter than one block: empty prefix, guidance 1 for the first block
    "the river story.",  # 8 tokens: an exact multiple of every block tested here
    "a long day of work and play at home",
]


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
@pytest.mark.parametrize("gen_length,guidance_scale", [(9, 3.0), (1, 7.0), (9, 1.0)])
def test_pipeline_matches_reference_sampler(name, gen_length, guidance_scale):
    transformer_kwargs, vae_kwargs = CONFIGURATIONS[name]
    pipe = make_tiny_pipeline(seed=len(name), transformer_kwargs=transformer_kwargs, vae_kwargs=vae_kwargs)
    block_length = pipe.transformer.config.block_size
    tokens_per_block = block_length * pipe.vae.config.patch_size
    prompt_lengths = [len(ids) for ids in pipe.tokenizer(PROMPTS)["input_ids"]]
    assert any(length % tokens_per_block == 0 for length in prompt_lengths)

    kwargs = {"gen_length": gen_length, "num_inference_steps": 3, "guidance_scale": guidance_scale}
    probe = pipe(
        PROMPTS, eos_early_stop=False, output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs
    )
    noise = torch.randn(probe.latents.shape, generator=torch.Generator().manual_seed(1))
    output = pipe(PROMPTS, eos_early_stop=False, output_type="latent", latents=noise, **kwargs)

    num_blocks = noise.shape[1] // block_length
    for row, prompt in enumerate(PROMPTS):
        latents, sampled, trimmed = reference_generate(
            pipe, prompt, noise[row].view(num_blocks, block_length, -1), 3, guidance_scale, 1.1, pipe.pad_token_id
        )
        assert relative_error(output.latents[row], latents) < LATENT_TOLERANCE
        assert output.sequences[row].tolist() == sampled[trimmed : trimmed + gen_length]
