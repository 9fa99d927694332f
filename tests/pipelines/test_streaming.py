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

"""Streamers (`streamer=`), the iterator of `pipe.stream` closed early, and guiders that name their branches."""

import time

import torch
from diffusers.guiders import ClassifierFreeGuidance

from cola_diffusers import ColaDLMStreamer

from ..conftest import PROMPTS, make_tiny_pipeline


KWARGS = {"gen_length": 14, "num_inference_steps": 3, "eos_early_stop": False}


class Collector(ColaDLMStreamer):
    def __init__(self):
        self.chunks, self.ended = [], 0

    def put(self, chunk):
        assert not self.ended, "a chunk after end()"
        self.chunks.append(chunk)

    def end(self):
        self.ended += 1


def test_a_streamer_receives_the_chunks_of_stream_in_the_calling_thread():
    pipe = make_tiny_pipeline(seed=3)
    pipe.set_progress_bar_config(disable=True)
    collector = Collector()
    output = pipe(PROMPTS, generator=torch.Generator().manual_seed(4), streamer=collector, preview_every=2, **KWARGS)
    streamed = list(pipe.stream(PROMPTS, generator=torch.Generator().manual_seed(4), preview_every=2, **KWARGS))
    assert collector.ended == 1
    assert [(c.block_index, c.step_index, c.texts, c.token_ids) for c in collector.chunks] == [
        (c.block_index, c.step_index, c.texts, c.token_ids) for c in streamed
    ]
    blocks = [chunk for chunk in collector.chunks if not chunk.is_preview]
    assert ["".join(chunk.texts[row] for chunk in blocks) for row in range(3)] == output.texts


def test_closing_the_stream_early_stops_the_generation():
    pipe = make_tiny_pipeline(seed=3)
    passes = []
    pipe.transformer.register_forward_hook(lambda module, args, output: passes.append(1))
    full = list(pipe.stream(PROMPTS, **{**KWARGS, "gen_length": 40}))
    full_passes = len(passes)

    passes.clear()
    stream = pipe.stream(PROMPTS, **{**KWARGS, "gen_length": 40})
    first = next(stream)
    started = time.monotonic()
    stream.close()
    assert time.monotonic() - started < 30
    assert first.block_index == 0 and len(full) == 11
    # The worker finished the block it was in, at most, then stopped: far fewer DiT passes than the full run.
    assert len(passes) <= 3 * full_passes // len(full)
    # The pipeline is usable again at once.
    assert len(list(pipe.stream(PROMPTS, **KWARGS))) == 4


class UnconditionalFirst(ClassifierFreeGuidance):
    """Classifier-free guidance that hands its branches to the pipeline in the other order."""

    def prepare_inputs(self, data):
        return list(reversed(super().prepare_inputs(data)))


def test_guider_branches_are_matched_by_name_not_by_order():
    pipe = make_tiny_pipeline(seed=3)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(
        3,
        pipe.num_blocks(pipe.make_request(prompt=PROMPTS, gen_length=10)) * 4,
        8,
        generator=torch.Generator().manual_seed(0),
    )
    kwargs = {
        "gen_length": 10,
        "num_inference_steps": 4,
        "eos_early_stop": False,
        "latents": noise,
        "output_type": "latent",
    }
    pipe.guider = ClassifierFreeGuidance(guidance_scale=5.0)
    expected = pipe(PROMPTS, **kwargs).latents
    pipe.guider = UnconditionalFirst(guidance_scale=5.0)
    torch.testing.assert_close(pipe(PROMPTS, **kwargs).latents, expected, rtol=0, atol=0)
