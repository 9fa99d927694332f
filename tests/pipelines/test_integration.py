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

"""diffusers integration: swappable schedulers and guiders, streaming, stop strings, callbacks, batch invariance."""

import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.guiders import AdaptiveProjectedGuidance, ClassifierFreeGuidance, ClassifierFreeZeroStarGuidance

from cola_diffusers import FlowMatchBlockCausalScheduler
from cola_diffusers.schedulers import FLOW_SOLVER

from ..conftest import PROMPTS, make_tiny_pipeline, relative_error
from ..reference_sampler import reference_generate


@pytest.fixture
def pipe():
    return make_tiny_pipeline(seed=3)


@pytest.fixture(scope="module")
def noise():
    return torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))


def generate(pipe, noise, **kwargs):
    arguments = {
        "gen_length": 10,
        "num_inference_steps": 4,
        "guidance_scale": 3.0,
        "eos_early_stop": False,
        "output_type": "latent",
        "latents": noise,
    }
    return pipe(PROMPTS, **{**arguments, **kwargs})


@pytest.mark.parametrize(
    "scheduler_class,config",
    [
        (FlowMatchEulerDiscreteScheduler, {"shift": 3.0}),
        (FlowMatchHeunDiscreteScheduler, {}),
        (UniPCMultistepScheduler, FLOW_SOLVER),
        (DPMSolverMultistepScheduler, FLOW_SOLVER),
        (FlowMatchBlockCausalScheduler, {"shift": 2.0}),
    ],
)
def test_diffusers_schedulers_match_the_reference_sampler(pipe, noise, scheduler_class, config):
    """The pipeline with a swapped scheduler equals a fresh copy of it driving the cache-free reference loop."""
    default = generate(pipe, noise)
    original_config = pipe.scheduler.config
    pipe.scheduler = scheduler_class.from_config(original_config, **config)
    swapped = generate(pipe, noise)
    for row, prompt in enumerate(PROMPTS):
        arguments = (pipe, prompt, noise[row].view(3, 4, 8), 4, 3.0, 1.1, pipe.pad_token_id)
        scheduler = scheduler_class.from_config(original_config, **config)
        latents, sampled, trimmed = reference_generate(*arguments, scheduler=scheduler)
        assert relative_error(swapped.latents[row], latents) < 1e-5
        assert swapped.sequences[row].tolist() == sampled[trimmed : trimmed + 10]
    pipe.scheduler = FlowMatchBlockCausalScheduler.from_config(original_config)
    assert torch.equal(generate(pipe, noise).latents, default.latents)


def test_flow_match_euler_with_the_official_sigmas_reproduces_the_default(pipe, noise):
    default = generate(pipe, noise)
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    official_sigmas = torch.linspace(1, 0, 5)[:-1].tolist()
    euler = generate(pipe, noise, sigmas=official_sigmas)
    torch.testing.assert_close(euler.latents, default.latents, rtol=1e-5, atol=1e-5)


def test_custom_timesteps_and_sigmas_on_the_call(pipe, noise):
    by_sigmas = generate(pipe, noise, sigmas=[1.0, 0.6, 0.2])
    by_timesteps = generate(pipe, noise, timesteps=[1000, 600, 200])
    assert torch.equal(by_sigmas.latents, by_timesteps.latents)
    assert pipe.num_timesteps == 3 * 3
    with pytest.raises(ValueError, match="Pass either `timesteps` or `sigmas`"):
        generate(pipe, noise, sigmas=[1.0], timesteps=[1000])


def test_classifier_free_guidance_guider_matches_the_built_in_guidance(pipe, noise):
    built_in = generate(pipe, noise, guidance_scale=3.0)
    pipe.guider = ClassifierFreeGuidance(guidance_scale=3.0)
    guided = generate(pipe, noise, guidance_scale=1.0)
    assert relative_error(guided.latents, built_in.latents) < 1e-5


def test_classifier_free_guidance_rescale_matches_its_formula(pipe, noise):
    """`guidance_rescale` mixes the guided velocity rescaled to the conditional one's std with the plain guided one."""

    def rescaled_guidance(cond, uncond, scale):
        guided = uncond + scale * (cond - uncond)
        return 0.7 * guided * cond.std() / guided.std() + 0.3 * guided

    pipe.guider = ClassifierFreeGuidance(guidance_scale=5.0, guidance_rescale=0.7)
    guided = generate(pipe, noise)
    for row, prompt in enumerate(PROMPTS):
        arguments = (pipe, prompt, noise[row].view(3, 4, 8), 4, 5.0, 1.1, pipe.pad_token_id)
        latents, sampled, trimmed = reference_generate(*arguments, guidance=rescaled_guidance)
        assert relative_error(guided.latents[row], latents) < 1e-5
        assert guided.sequences[row].tolist() == sampled[trimmed : trimmed + 10]
        # The rescale matters here: plain guidance is far from it.
        assert relative_error(guided.latents[row], reference_generate(*arguments)[0]) > 1e-2


@pytest.mark.parametrize(
    "guider",
    [
        ClassifierFreeGuidance(guidance_scale=5.0, start=0.25, stop=0.75),
        AdaptiveProjectedGuidance(guidance_scale=5.0, adaptive_projected_guidance_momentum=-0.5),
        ClassifierFreeZeroStarGuidance(guidance_scale=5.0),
    ],
    ids=["cfg_interval", "apg", "cfg_zero_star"],
)
def test_guiders_run_and_change_the_result(pipe, noise, guider):
    plain = generate(pipe, noise, guidance_scale=5.0)
    pipe.guider = guider
    guided = generate(pipe, noise)
    assert torch.isfinite(guided.latents).all()
    assert not torch.allclose(guided.latents, plain.latents)


def test_guider_with_scale_one_runs_one_branch(pipe, noise):
    rows = []
    pipe.transformer.register_forward_hook(lambda module, args, output: rows.append(args[0].shape[0]))
    pipe.guider = ClassifierFreeGuidance(guidance_scale=1.0)
    generate(pipe, noise)
    assert set(rows) == {3}


def test_prompt_results_do_not_depend_on_the_batch(pipe):
    generators = [torch.Generator().manual_seed(seed) for seed in (11, 12, 13)]
    batch = pipe(PROMPTS, gen_length=10, num_inference_steps=3, generator=generators, temperature=0.8, top_k=50)
    for row, (prompt, seed) in enumerate(zip(PROMPTS, (11, 12, 13))):
        alone = pipe(
            prompt,
            gen_length=10,
            num_inference_steps=3,
            generator=[torch.Generator().manual_seed(seed)],
            temperature=0.8,
            top_k=50,
        )
        assert alone.texts[0] == batch.texts[row]


def test_interrupt_stops_after_the_current_block(pipe, noise):
    def interrupt(pipeline, step, timestep, callback_kwargs):
        pipeline._interrupt = True
        return callback_kwargs

    full = generate(pipe, noise, output_type="pt")
    stopped = generate(pipe, noise, output_type="pt", callback_on_step_end=interrupt)
    # The first block re-emits 2 prompt tokens of the longest-tailed prompt: it yields 2 new tokens there.
    assert stopped.sequences[0, :2].tolist() == full.sequences[0, :2].tolist()
    assert stopped.sequences[0, 2:].tolist() == [pipe.pad_token_id] * 8


def test_stream_concatenates_to_the_text(pipe):
    kwargs = {"gen_length": 14, "num_inference_steps": 3, "eos_early_stop": False}
    expected = pipe(PROMPTS, generator=torch.Generator().manual_seed(4), **kwargs).texts
    chunks = list(pipe.stream(PROMPTS, generator=torch.Generator().manual_seed(4), **kwargs))
    assert [chunk.block_index for chunk in chunks] == [0, 1, 2, 3]
    assert ["".join(chunk.texts[row] for chunk in chunks) for row in range(3)] == expected


def test_stream_previews(pipe):
    chunks = list(pipe.stream(PROMPTS, gen_length=6, num_inference_steps=4, preview_every=2))
    previews = [chunk for chunk in chunks if chunk.is_preview]
    assert [(chunk.block_index, chunk.step_index) for chunk in previews] == [(0, 1), (0, 3), (1, 1), (1, 3)]
    # The first block's previews leave out the prompt tokens it re-emits, as the output does.
    trimmed = [len(ids) % 4 for ids in pipe.tokenizer(PROMPTS)["input_ids"]]
    assert [[len(ids) for ids in chunk.token_ids] for chunk in previews[:2]] == [[4 - t for t in trimmed]] * 2
    assert all(len(ids) == 4 for chunk in previews[2:] for ids in chunk.token_ids)
    with pytest.raises(ValueError, match="`preview_every` must be an integer >= 1"):
        list(pipe.stream(PROMPTS, preview_every=0))


def test_stop_strings_cut_the_text_and_stop(pipe, noise):
    free = generate(pipe, noise, output_type="text")
    text = free.texts[2]
    marker = text[3:5]
    stopped = generate(pipe, noise, output_type="text", stop=[marker, "never-produced"])
    assert stopped.texts[2] == text[: text.find(marker)]
    kept = stopped.sequences[2].tolist()
    num_kept = len(kept) - kept[::-1].index(next(t for t in kept[::-1] if t != pipe.pad_token_id))
    assert marker in pipe.tokenizer.decode(kept[:num_kept]) and marker not in pipe.tokenizer.decode(
        kept[: num_kept - 1]
    )

    streamed = "".join(
        chunk.texts[2]
        for chunk in pipe.stream(
            PROMPTS,
            gen_length=10,
            num_inference_steps=4,
            guidance_scale=3.0,
            eos_early_stop=False,
            latents=noise,
            stop=marker,
        )
    )
    assert streamed == stopped.texts[2]


def test_model_cpu_offload_gives_the_same_result(pipe, noise):
    expected = generate(pipe, noise, output_type="pt").sequences
    pipe.enable_model_cpu_offload(device="cpu")
    assert torch.equal(generate(pipe, noise, output_type="pt").sequences, expected)


def test_official_layout_takes_a_dtype_per_component(fixture_dir):
    from cola_diffusers import ColaDLMPipeline

    pipe = ColaDLMPipeline.from_pretrained(
        fixture_dir, dtype={"transformer": torch.bfloat16, "default": torch.float32}
    )
    assert (pipe.transformer.dtype, pipe.vae.dtype) == (torch.bfloat16, torch.float32)
    with pytest.raises(ValueError, match="`device_map` is not supported for the official layout"):
        ColaDLMPipeline.from_pretrained(fixture_dir, device_map="balanced")


def test_a_last_step_preview_is_the_block_text():
    from cola_diffusers import ColaDLMPipeline
    from cola_diffusers.demo import DEMO_MODEL_PATH

    demo = ColaDLMPipeline.from_pretrained(DEMO_MODEL_PATH)
    demo.set_progress_bar_config(disable=True)
    chunks = list(demo.stream("1234>", gen_length=3, num_inference_steps=4, preview_every=4))
    preview, block = chunks[0], chunks[1]
    assert preview.is_preview and not block.is_preview
    assert preview.texts == block.texts == ["432"]
