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

"""One request object: resolved once, token ids in, finish reasons out, and no request state on shared models."""

import threading

import pytest
import torch
from accelerate import PartialState

from cola_diffusers import ColaDLMPipeline, FlowMatchBlockCausalScheduler
from cola_diffusers.evaluation.generation import run_task
from cola_diffusers.evaluation.settings import EvalSettings
from cola_diffusers.training.couplings import teacher_couplings

from ..conftest import PROMPTS, make_tiny_pipeline


@pytest.fixture
def pipe():
    return make_tiny_pipeline(seed=3)


def test_request_resolves_every_default_once(pipe):
    request = pipe.make_request(prompt=PROMPTS, stop="river")
    assert (request.gen_length, request.block_length) == (32, pipe.transformer.config.block_size)
    assert (request.num_inference_steps, request.guidance_scale) == (16, 7.0)
    assert request.stop == ("river",) and request.pad_token_id == pipe.pad_token_id
    assert request.prompt_token_ids == tuple(tuple(ids) for ids in pipe.tokenize(PROMPTS))
    # A request made from another's settings and prompts is that request.
    assert pipe.make_request(prompt_token_ids=request.prompt_token_ids, stop="river") == request
    with pytest.raises(ValueError, match="Pass either `request` or its arguments, not both; got .*'gen_length'"):
        pipe(request=request, gen_length=4)


def test_prompt_token_ids_and_a_request_give_the_text_call(pipe):
    kwargs = {"gen_length": 10, "num_inference_steps": 3, "eos_early_stop": False}
    noise = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))
    expected = pipe(PROMPTS, latents=noise, **kwargs)
    from_ids = pipe(prompt_token_ids=pipe.tokenize(PROMPTS), latents=noise, **kwargs)
    from_request = pipe(request=pipe.make_request(prompt=PROMPTS, **kwargs), latents=noise)
    for output in (from_ids, from_request):
        assert output.texts == expected.texts and torch.equal(output.sequences, expected.sequences)
    with pytest.raises(ValueError, match=r"`prompt_token_ids\[0\]` must hold integers in \[0, 384\)"):
        pipe(prompt_token_ids=[[1, 384]])


def test_output_says_why_each_prompt_ended(pipe):
    noise = torch.randn(3, 12, 8, generator=torch.Generator().manual_seed(0))
    free = pipe(PROMPTS, gen_length=10, num_inference_steps=3, eos_early_stop=False, latents=noise)
    assert free.finish_reasons == ["length"] * 3 and free.num_tokens == [10] * 3
    # The first prompt stops at its third token, kept; the others run to the end of their blocks.
    stop_token_id = free.sequences[0, 2].item()
    stopped = pipe(PROMPTS, gen_length=10, num_inference_steps=3, eos_token_id=stop_token_id, latents=noise)
    first_stop = free.sequences[0].tolist().index(stop_token_id)
    assert stopped.finish_reasons[0] == "stop" and stopped.num_tokens[0] == first_stop + 1
    for row in (1, 2):
        ids = free.sequences[row].tolist()
        expected = ("stop", ids.index(stop_token_id) + 1) if stop_token_id in ids else ("length", 10)
        assert (stopped.finish_reasons[row], stopped.num_tokens[row]) == expected

    def interrupt(pipe, step, timestep, callback_kwargs):
        pipe._interrupt = True
        return callback_kwargs

    interrupted = pipe(PROMPTS, gen_length=10, num_inference_steps=3, latents=noise, callback_on_step_end=interrupt)
    assert interrupted.finish_reasons == ["interrupted"] * 3


def test_two_threads_share_one_transformer(pipe):
    """Two pipelines on one transformer and VAE, each with its own scheduler, run at once as they run alone."""
    other = ColaDLMPipeline(
        transformer=pipe.transformer,
        vae=pipe.vae,
        scheduler=FlowMatchBlockCausalScheduler.from_config(pipe.scheduler.config),
        tokenizer=pipe.tokenizer,
    )
    other.set_progress_bar_config(disable=True)
    calls = [
        (pipe, {"num_inference_steps": 4, "guidance_scale": 3.0, "gen_length": 24}),
        (other, {"num_inference_steps": 7, "guidance_scale": 1.0, "gen_length": 24}),
    ]

    def generate(pipeline, kwargs):
        return pipeline(PROMPTS, generator=torch.Generator().manual_seed(1), eos_early_stop=False, **kwargs)

    alone = [generate(*call).sequences for call in calls]
    for _ in range(3):
        results = [None, None]
        barrier = threading.Barrier(2)

        def run(index):
            barrier.wait()
            try:
                results[index] = generate(*calls[index]).sequences
            except Exception as error:
                results[index] = error

        threads = [threading.Thread(target=run, args=(index,)) for index in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not any(isinstance(result, Exception) for result in results), results
        assert all(torch.equal(result, expected) for result, expected in zip(results, alone))


def test_evaluation_tokenizes_every_prompt_once(pipe, tokenized, tmp_path):
    records = [{"id": index, "prompt": f"{prompt} {index}"} for index, prompt in enumerate(PROMPTS * 2)]
    settings = EvalSettings(model="tiny", gen_length=6, num_inference_steps=2)
    run_task(pipe, "task", records, settings, str(tmp_path), batch_size=4, state=PartialState(cpu=True))
    assert {record["prompt"]: tokenized[record["prompt"]] for record in records} == {
        record["prompt"]: 1 for record in records
    }


def test_couplings_tokenize_and_encode_every_prompt_once(pipe, tokenized, monkeypatch):
    encoded = []
    encode = type(pipe.vae).encode
    monkeypatch.setattr(
        type(pipe.vae), "encode", lambda vae, *args, **kwargs: encoded.append(1) or encode(vae, *args, **kwargs)
    )
    options = {"gen_length": 8, "num_inference_steps": 2, "guidance_scale": 3.0}
    teacher_couplings(pipe, PROMPTS, max_prompt_tokens=32, generator=torch.Generator().manual_seed(0), **options)
    assert [tokenized[prompt] for prompt in PROMPTS] == [1, 1, 1]
    assert len(encoded) == 1
