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

"""
What one generation dispatches: the operations per DiT forward and the host synchronisations per block. On a GPU
every dispatched operation is a launch or a view the host prepares, and every synchronisation stalls the launches.
"""

from collections import Counter

import pytest
from torch.utils._python_dispatch import TorchDispatchMode

from ..conftest import make_mid_pipeline, prompt_of


# Operations that wait for the device: a value read on the host, or an output whose size depends on the data.
SYNCHRONISING = {"aten._local_scalar_dense", "aten.nonzero", "aten.item", "aten.equal", "aten.is_nonzero"}


class DispatchRecorder(TorchDispatchMode):
    """Records every aten operation dispatched, and the events `mark` adds, in order."""

    def __init__(self):
        super().__init__()
        self.events = []

    def mark(self, event: str):
        self.events.append(event)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.events.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def recorded():
    """One generation of the mid model: batch 1, a 64-token prompt, 64 new tokens, 16 steps, guidance 7."""
    pipe = make_mid_pipeline()
    arguments = {"gen_length": 64, "num_inference_steps": 16, "guidance_scale": 7.0, "eos_early_stop": False}
    prompt_token_ids = [prompt_of(pipe, 64)]
    pipe(prompt_token_ids=prompt_token_ids, **arguments)
    recorder = DispatchRecorder()
    hooks = [
        pipe.transformer.register_forward_pre_hook(lambda module, args: recorder.mark("dit")),
        pipe.vae.decoder.transformer.register_forward_pre_hook(lambda module, args: recorder.mark("decode")),
    ]
    try:
        with recorder:
            pipe(prompt_token_ids=prompt_token_ids, **arguments)
    finally:
        for hook in hooks:
            hook.remove()
    return recorder.events


def test_a_dit_forward_dispatches_at_most_171_operations(recorded):
    counts = Counter(recorded)
    num_forwards = counts.pop("dit")
    counts.pop("decode")
    # 4 blocks of 16 steps, one commit pass for each of the 3 blocks after the first, and the prefill.
    assert num_forwards == 68
    # Everything the generation dispatches, per DiT forward: 343 before the forward was rewritten.
    assert sum(counts.values()) / num_forwards <= 171


def test_a_block_synchronises_with_the_host_at_most_once_and_not_before_its_decode(recorded):
    # Split the generation at its decoder calls: the prefill's, then one per block.
    segments, current = [], []
    for event in recorded:
        if event == "decode":
            segments.append(current)
            current = []
        else:
            current.append(event)
    segments.append(current)
    prefill, *blocks, tail = segments
    assert len(blocks) == 4
    for block in blocks:
        first_step = block.index("dit")
        # From the block's first DiT pass to its decode: no synchronisation at all.
        assert not SYNCHRONISING & set(block[first_step:])
    # After each decode (sampling, stops, the next block's set-up): at most one.
    for after_decode in [block[: block.index("dit")] for block in blocks[1:]] + [tail]:
        assert sum(event in SYNCHRONISING for event in after_decode) <= 1
