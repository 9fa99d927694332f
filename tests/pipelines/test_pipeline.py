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

"""Behaviour of ColaDLMPipeline beyond parity: stopping, batching, outputs, callbacks, randomness."""

import dataclasses
import json

import pytest
import torch

from cola_diffusers import ColaDLMPipeline
from cola_diffusers.generation.logits import TokenSampling

from ..conftest import PROMPTS, make_tiny_pipeline, save_distilled_checkpoint


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline(seed=3)


def record_guided_passes(pipe, guided: list):
    """
    A forward hook (with kwargs) of the DiT that appends to `guided` whether a pass ran both guidance branches: the
    block with its context, then the block alone at positions restarting from 0.
    """
    block_length = pipe.transformer.config.block_size

    def record(module, args, kwargs, output):
        position_ids = kwargs["position_ids"]
        both = position_ids.shape[1] == 2 * block_length and bool((position_ids[:, block_length] == 0).all())
        guided.append(both)

    return record


def generate(pipe, prompts=PROMPTS, **kwargs):
    arguments = {"gen_length": 10, "num_inference_steps": 3, "guidance_scale": 3.0, "eos_early_stop": False}
    return pipe(prompts, **{**arguments, **kwargs})


def test_output_shapes_and_types(pipe):
    text = generate(pipe)
    assert text.sequences.shape == (3, 10) and text.sequences.dtype == torch.long
    assert len(text.texts) == 3 and all(isinstance(t, str) for t in text.texts) and text.latents is None
    latent = generate(pipe, output_type="latent", generator=torch.Generator().manual_seed(0))
    # The longest re-emitted prompt tail is 2 tokens: 2 + 10 tokens need 3 blocks of 4.
    assert latent.latents.shape == (3, 12, 8) and latent.texts is None
    sequences, texts, latents = generate(pipe, output_type="pt", return_dict=False)
    assert sequences.shape == (3, 10) and texts is None and latents is None


def test_same_seed_same_output_and_other_seed_differs(pipe):
    first = generate(pipe, output_type="latent", generator=torch.Generator().manual_seed(7))
    again = generate(pipe, output_type="latent", generator=torch.Generator().manual_seed(7))
    other = generate(pipe, output_type="latent", generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.latents, again.latents)
    assert not torch.allclose(first.latents, other.latents)


def test_each_prompt_in_a_batch_matches_the_prompt_alone(pipe):
    noise = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))
    batch = generate(pipe, latents=noise, output_type="latent")
    for row, prompt in enumerate(PROMPTS):
        alone = generate(pipe, [prompt], latents=noise[row : row + 1], output_type="latent")
        torch.testing.assert_close(alone.latents[0], batch.latents[row], rtol=1e-5, atol=1e-5)
        assert alone.sequences[0].tolist() == batch.sequences[row].tolist()


def test_stop_token_ends_the_sequence_and_the_text(pipe):
    noise = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))
    free = generate(pipe, latents=noise)
    stop_id = int(free.sequences[0, 3])
    first_stop = free.sequences[0].tolist().index(stop_id)
    stopped = generate(pipe, latents=noise, eos_early_stop=True, eos_token_id=stop_id)
    row = stopped.sequences[0].tolist()
    assert row[: first_stop + 1] == free.sequences[0, : first_stop + 1].tolist()
    assert row[first_stop + 1 :] == [pipe.pad_token_id] * (10 - first_stop - 1)
    expected_text = pipe.tokenizer.decode(free.sequences[0, :first_stop].tolist(), skip_special_tokens=True)
    assert stopped.texts[0] == expected_text


def test_generation_stops_once_every_prompt_has_stopped(pipe):
    blocks_run = []
    noise = torch.randn(1, 12, 8, generator=torch.Generator().manual_seed(0))
    free = generate(pipe, ["the river story."], latents=noise)
    stop_id = int(free.sequences[0, 0])

    def count_blocks(pipeline, step, timestep, callback_kwargs):
        blocks_run.append(step // 3)
        return callback_kwargs

    generate(
        pipe,
        ["the river story."],
        latents=noise,
        eos_early_stop=True,
        eos_token_id=stop_id,
        callback_on_step_end=count_blocks,
    )
    assert sorted(set(blocks_run)) == [0]


def test_guidance_scale_one_runs_a_single_branch(pipe):
    guided_per_call = []
    handle = pipe.transformer.register_forward_hook(record_guided_passes(pipe, guided_per_call), with_kwargs=True)
    try:
        generate(pipe, ["the river story."], guidance_scale=1.0)
        single = list(guided_per_call)
        guided_per_call.clear()
        generate(pipe, ["the river story."], guidance_scale=3.0)
    finally:
        handle.remove()
    assert not any(single)
    assert any(guided_per_call)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_a_committed_block_joins_the_next_pass_without_guidance(pipe, guidance_scale):
    # 8 prompt tokens: a prefill of 2 blocks, then 2 steps per block of 4 latents.
    lengths = []
    handle = pipe.transformer.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    try:
        output = generate(pipe, ["the river story."], num_inference_steps=2, guidance_scale=guidance_scale)
    finally:
        handle.remove()
    num_blocks = pipe.num_blocks(pipe.make_request(prompt=["the river story."], gen_length=10))
    assert len(output.texts) == 1 and num_blocks == 3
    if guidance_scale == 1.0:
        # The first step of a block also writes the block before it into the cache: 8 latents in one pass.
        assert lengths == [8, 4, 4] + [8, 4] * (num_blocks - 1)
    else:
        # A guided pass carries the block twice (with its context, then alone): the commit is a pass of its own.
        assert lengths == [8, 8, 8] + [4, 8, 8] * (num_blocks - 1)


def test_callback_sees_the_block_and_can_edit_it(pipe):
    noise = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))
    seen = []

    def record(pipeline, step, timestep, callback_kwargs):
        seen.append((step, float(timestep), tuple(callback_kwargs["latents"].shape)))
        return callback_kwargs

    baseline = generate(pipe, latents=noise, output_type="latent", callback_on_step_end=record)
    assert [s[0] for s in seen] == list(range(9))
    assert {s[2] for s in seen} == {(3, 4, 8)}
    assert pipe.num_timesteps == 9

    def push(pipeline, step, timestep, callback_kwargs):
        return {"latents": callback_kwargs["latents"] + 1.0}

    edited = generate(pipe, latents=noise, output_type="latent", callback_on_step_end=push)
    assert not torch.allclose(edited.latents, baseline.latents)


def test_temperature_sampling_is_seeded(pipe):
    kwargs = {"temperature": 1.0, "top_k": 20, "top_p": 0.9}
    first = generate(pipe, generator=torch.Generator().manual_seed(1), **kwargs)
    again = generate(pipe, generator=torch.Generator().manual_seed(1), **kwargs)
    greedy = generate(pipe, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.sequences, again.sequences)
    assert not torch.equal(first.sequences, greedy.sequences)


def test_saved_tokenizer_class_exists_in_every_transformers_version(pipe, tmp_path):
    # transformers 5 calls the class `TokenizersBackend`; `PreTrainedTokenizerFast` is its name in 4 and 5.
    pipe.save_pretrained(tmp_path)
    with open(tmp_path / "model_index.json") as f:
        assert json.load(f)["tokenizer"] == ["transformers", "PreTrainedTokenizerFast"]


def test_save_and_load_round_trip_generates_the_same(pipe, tmp_path):
    pipe.save_pretrained(tmp_path)
    reloaded = ColaDLMPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    noise = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(generate(pipe, latents=noise).sequences, generate(reloaded, latents=noise).sequences)


def steps_per_block_and_branches(pipe, **kwargs) -> tuple[float, float, bool]:
    """Scheduler steps per block, guidance scale and whether a DiT pass ran both branches when `pipe` samples."""
    steps, guided = [], []

    def count(pipeline, step, timestep, callback_kwargs):
        steps.append(step)
        return callback_kwargs

    handle = pipe.transformer.register_forward_hook(record_guided_passes(pipe, guided), with_kwargs=True)
    try:
        pipe(PROMPTS, gen_length=10, eos_early_stop=False, callback_on_step_end=count, **kwargs)
    finally:
        handle.remove()
    num_blocks = pipe.num_blocks(pipe.make_request(prompt=PROMPTS, gen_length=10))
    return len(steps) / num_blocks, pipe.guidance_scale, any(guided)


def test_a_saved_checkpoint_samples_with_its_own_defaults(pipe, tmp_path):
    save_distilled_checkpoint(pipe, tmp_path)
    with open(tmp_path / "model_index.json") as f:
        index = json.load(f)
    assert (index["default_num_inference_steps"], index["default_guidance_scale"]) == (1, 1.0)
    student = ColaDLMPipeline.from_pretrained(tmp_path)
    student.set_progress_bar_config(disable=True)
    assert (student.config.default_num_inference_steps, student.config.default_guidance_scale) == (1, 1.0)
    # One step per block and one branch (no unguided copy of the block); explicit arguments win.
    assert steps_per_block_and_branches(student) == (1, 1.0, False)
    assert steps_per_block_and_branches(student, num_inference_steps=3, guidance_scale=3.0) == (3, 3.0, True)
    # A checkpoint that records no defaults samples with 16 steps and guidance 7.
    assert pipe.config.default_num_inference_steps is None
    assert steps_per_block_and_branches(pipe) == (16, 7.0, True)


def test_presence_and_frequency_penalties_change_the_blocks_after_the_first(pipe):
    kwargs = {"gen_length": 24, "eos_early_stop": False, "repetition_penalty": 1.0}
    plain = pipe(PROMPTS, generator=torch.Generator().manual_seed(0), **kwargs)
    zeros = pipe(
        PROMPTS, generator=torch.Generator().manual_seed(0), presence_penalty=0, frequency_penalty=0, **kwargs
    )
    assert torch.equal(zeros.sequences, plain.sequences)
    for penalty in (-2.0, 2.0):
        penalties = {"presence_penalty": penalty, "frequency_penalty": penalty}
        penalized = pipe(PROMPTS, generator=torch.Generator().manual_seed(0), **penalties, **kwargs)
        # The first block has no earlier tokens to penalise.
        first_block = penalized.sequences[:, :1]
        assert torch.equal(first_block, plain.sequences[:, :1])
        assert not torch.equal(penalized.sequences, plain.sequences)


def test_penalties_leave_out_the_prompt_tokens_that_the_first_block_re_emits(pipe):
    calls = []

    @dataclasses.dataclass(frozen=True)
    class RecordedSampling(TokenSampling):
        def __call__(self, logits, history, generator=None, num_prompt_tokens=None):
            calls.append((history.shape[1], num_prompt_tokens))
            return super().__call__(logits, history, generator, num_prompt_tokens)

    request = pipe.make_request(prompt=PROMPTS, gen_length=12, eos_early_stop=False, presence_penalty=1.0)
    pipe(request=dataclasses.replace(request, sampling=RecordedSampling(**vars(request.sampling))))
    tokens_per_block = pipe.transformer.config.block_size * pipe.vae.config.patch_size
    trimmed = [len(ids) % tokens_per_block for ids in request.prompt_token_ids]
    assert any(trimmed) and calls[1:] and all(count == trimmed for _, count in calls)
    assert [length for length, _ in calls] == [index * tokens_per_block for index in range(len(calls))]
