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

"""diffusers' `set_attention_backend` reaches the processors of both models, and a backend change keeps outputs."""

import pytest
import torch
from diffusers.models.attention_dispatch import _AttentionBackendRegistry

from ..conftest import PROMPTS, make_tiny_pipeline


@pytest.fixture(autouse=True)
def restore_the_active_backend():
    """`set_attention_backend` also makes its backend diffusers' process-wide default: put the default back."""
    backend, _ = _AttentionBackendRegistry.get_active_backend()
    yield
    _AttentionBackendRegistry.set_active_backend(backend)


def test_set_attention_backend_reaches_every_processor_and_keeps_the_output():
    pipe = make_tiny_pipeline(seed=1)
    pipe.set_progress_bar_config(disable=True)
    kwargs = {"gen_length": 6, "num_inference_steps": 2, "output_type": "latent", "eos_early_stop": False}
    expected = pipe(PROMPTS, generator=torch.Generator().manual_seed(0), **kwargs).latents
    for model in (pipe.transformer, pipe.vae):
        model.set_attention_backend("_native_math")
        processors = [module.processor for module in model.modules() if hasattr(module, "processor")]
        assert processors and all(p._attention_backend == "_native_math" for p in processors)
    latents = pipe(PROMPTS, generator=torch.Generator().manual_seed(0), **kwargs).latents
    torch.testing.assert_close(latents, expected, rtol=1e-4, atol=1e-4)
